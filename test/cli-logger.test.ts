/** The CLI's log lines: JSON for pipes and files, plain lines for a person at a terminal, passwords hidden in both. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { humanLogLine } from '../src/cli/logger.js';

const LOGGER = fileURLToPath(new URL('../src/cli/logger.js', import.meta.url));

test('a record reads as a line: level, message, then its facts', () => {
  const line = humanLogLine(JSON.stringify({ level: 40, time: 1, pid: 2, hostname: 'h', folder: 'INBOX', uid: 7, keywords: ['a b', '$x'], err: { code: 'X' }, msg: 'copied without them' }) + '\n');
  assert.equal(line, '\r\x1b[Kwarning: copied without them (folder=INBOX, uid=7, keywords=[a b, $x], err={"code":"X"})\n');
  assert.equal(humanLogLine('not json'), 'not json');
  // A folder name or server text cannot move the cursor or forge a line.
  assert.equal(humanLogLine(JSON.stringify({ level: 30, folder: 'a\x1b[2Jb\r\nwarning: fake', msg: 'x' })), '\r\x1b[Kinfo: x (folder=a\\x1b[2Jb\\x0d\\x0awarning: fake)\n');
});

for (const human of [false, true]) {
  test(`${human ? 'terminal' : 'JSON'} lines hide passwords`, () => {
    const script = `import { cliLogger } from ${JSON.stringify(LOGGER)}; cliLogger('info', { human: ${human} }).warn({ login: { user: 'u', password: 'S3cret-pw' } }, 'refused');`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.ok(!r.stderr.includes('S3cret-pw'), r.stderr);
    if (human) assert.match(r.stderr, /warning: refused \(login=\{"user":"u","password":"\[redacted\]"\}\)/);
    else assert.equal(JSON.parse(r.stderr).login.password, '[redacted]');
  });
}
