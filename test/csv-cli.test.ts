/**
 * `mailferry csv check FILE [--json]` as an admin runs it: exit 0 valid, 2 invalid or unreadable,
 * one `line N, column C: message` per problem, the `--json` line, and no password anywhere.
 *
 * Run through the real `mailferry` binary (the bundle that `bin` names).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { CLI, lastJson } from './helpers/cli.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

type Runner = (args: string[]) => Promise<Run>;

function runNode(nodeArgs: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    // cwd: the repository, so the harness resolves `commander` from its node_modules.
    const child = spawn(process.execPath, nodeArgs, { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

const runners: [string, Runner][] = [['mailferry', (args) => runNode([CLI, ...args])]];

const SECRETS = ['Hq7-first-Secret', 'Hq7-second-Secret', 'Hq7-third-Secret', 'Hq7-fourth-Secret'];
let dir: string;
const path = (name: string) => join(dir, name);

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'mailferry-csv-cli-'));
  writeFileSync(path('good.csv'), `EmailAddress,UserName,Password\r\na@example.com,alice,"${SECRETS[0]}"\r\nb@example.com,bob,${SECRETS[1]}\r\n`);
  writeFileSync(
    path('bad.csv'),
    [
      'EmailAddress,UserName,Password',
      `a@example.com,alice,${SECRETS[0]}`,
      `${SECRETS[1]},bob,${SECRETS[1]}`, // 3: the password in the address column
      `c@example.com,,${SECRETS[2]}`, // 4: empty user name
      `c@example.com,carol,${SECRETS[3]},extra`, // 5: 4 columns
      '',
    ].join('\n'),
  );
  writeFileSync(path('big.csv'), '');
  truncateSync(path('big.csv'), 11 * 1024 * 1024); // sparse: instant, and proves the size is checked before reading
});

after(() => rmSync(dir, { recursive: true, force: true }));

function noSecrets(r: Run): void {
  for (const s of SECRETS) assert.ok(!r.stdout.includes(s) && !r.stderr.includes(s), `password ${s} in the output:\n${r.stdout}\n${r.stderr}`);
}

for (const [name, run] of runners) {
  describe(`csv check through ${name}`, () => {
    const it = test;

    it('a valid file: exit 0', async () => {
      const r = await run(['csv', 'check', path('good.csv')]);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /good\.csv: valid, 2 rows/);
      noSecrets(r);
    });

    it('an invalid file: exit 2, one "line N, column C: message" per problem, no password', async () => {
      const r = await run(['csv', 'check', path('bad.csv')]);
      assert.equal(r.status, 2, r.stderr);
      const lines = r.stdout.trim().split('\n');
      assert.match(lines[0] as string, /^line 3, column EmailAddress: the value \(hidden: it is also a password in this file\) is not an email address: it has no @ \[invalid-address\]$/);
      assert.match(lines[1] as string, /^line 4, column UserName: the UserName value is empty \[empty-value\]$/);
      assert.match(lines[2] as string, /^line 5: the row has 4 columns, the header has 3.* \[column-count\]$/);
      assert.match(lines[3] as string, /bad\.csv: NOT valid \(4 data rows\)/);
      noSecrets(r);
    });

    it('--json: the last stdout line is { valid, rows, errors }', async () => {
      const r = await run(['csv', 'check', path('bad.csv'), '--json']);
      assert.equal(r.status, 2, r.stderr);
      assert.deepEqual(lastJson(r.stdout), {
        valid: false,
        rows: 4,
        errors: [
          { line: 3, column: 'EmailAddress', check: 'invalid-address', message: 'the value (hidden: it is also a password in this file) is not an email address: it has no @' },
          { line: 4, column: 'UserName', check: 'empty-value', message: 'the UserName value is empty' },
          { line: 5, check: 'column-count', message: 'the row has 4 columns, the header has 3; a comma inside a value? Put that value in quotes' },
        ],
      });
      assert.equal(r.stdout.trim().split('\n').length, 1, 'with --json, stdout is the JSON line only');
      assert.match(r.stderr, /line 3, column EmailAddress/);
      noSecrets(r);
      const good = await run(['csv', 'check', path('good.csv'), '--json']);
      assert.equal(good.status, 0);
      assert.deepEqual(lastJson(good.stdout), { valid: true, rows: 2, errors: [] });
      noSecrets(good);
    });

    it('an unreadable file: exit 2 with the reason', async () => {
      const r = await run(['csv', 'check', path('missing.csv')]);
      assert.equal(r.status, 2);
      assert.match(r.stderr, /cannot read .*missing\.csv: no such file/);
      const dirRun = await run(['csv', 'check', dir, '--json']);
      assert.equal(dirRun.status, 2);
      assert.deepEqual(lastJson(dirRun.stdout), { valid: false, rows: 0, errors: [{ line: null, check: 'unreadable-file', message: `cannot read ${dir}: it is a directory` }] });
    });

    it('a file over 10 MB: exit 2, too-large', async () => {
      const r = await run(['csv', 'check', path('big.csv'), '--json']);
      assert.equal(r.status, 2);
      const json = lastJson(r.stdout) as { errors: { check: string; message: string }[] };
      assert.equal(json.errors[0]?.check, 'too-large');
      assert.match(json.errors[0]?.message ?? '', /11\.0 MB/);
    });

    it('--help describes the command', async () => {
      const r = await run(['csv', 'check', '--help']);
      assert.equal(r.status, 0);
      assert.match(r.stdout, /Usage: mailferry csv check \[options\] <file>/);
      assert.match(r.stdout, /--json/);
    });
  });
}
