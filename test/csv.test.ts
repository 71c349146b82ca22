/**
 * Migration file validation (SPEC §1): one test per check, files with many problems at once, the
 * size limits at full size, RFC 4180 quoting, and no password in any output.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { inspect } from 'node:util';
import {
  CHECK_NAMES,
  type CheckName,
  MAX_DATA_ROWS,
  MAX_FILE_BYTES,
  type Problem,
  validateMigrationFile,
  validateMigrationFileSync,
  type ValidationResult,
} from '../src/csv/index.js';

const HEADER = 'EmailAddress,UserName,Password';

/** A file from lines, LF-terminated, as a Buffer. */
function file(...lines: string[]): Buffer {
  return Buffer.from(lines.map((l) => `${l}\n`).join(''));
}

function errorsOf(r: ValidationResult): Problem[] {
  assert.equal(r.valid, false, 'the file should be invalid');
  return r.valid ? [] : r.errors;
}

/** The problems as `line:column:check`, the form most assertions compare. */
function summary(r: ValidationResult): string[] {
  return errorsOf(r).map((e) => `${e.line ?? '-'}:${e.column ?? '-'}:${e.check}`);
}

function only(r: ValidationResult, check: CheckName): Problem {
  const errors = errorsOf(r);
  assert.equal(errors.length, 1, `one problem expected, got ${JSON.stringify(errors)}`);
  const [e] = errors as [Problem];
  assert.equal(e.check, check);
  return e;
}

const check = (buf: Buffer) => validateMigrationFileSync(buf);

describe('a valid file', () => {
  test('gives its rows, with line numbers, trimmed names and verbatim passwords', () => {
    const r = check(file(`${HEADER},UserRoot`, 'a@example.com, alice , pw with spaces ,/users/alice', 'b@example.com,bob,pw2,'));
    assert.equal(r.valid, true);
    assert.deepEqual(r.valid && r.rows.map((row) => ({ ...row })), [
      { line: 2, emailAddress: 'a@example.com', userName: 'alice', password: ' pw with spaces ', userRoot: '/users/alice' },
      { line: 3, emailAddress: 'b@example.com', userName: 'bob', password: 'pw2' },
    ]);
  });

  test('accepts RFC 4180 quoting: commas, doubled quotes and line breaks inside values', () => {
    const r = check(
      Buffer.from(`${HEADER},UserRoot\r\n"a@example.com","alice","p,w",\r\nb@example.com,bob,"say ""hi""",\r\nc@example.com,carol,x,"/two\r\nlines"\r\nd@example.com,dave,x,\r\n`),
    );
    assert.equal(r.valid, true);
    if (!r.valid) return;
    assert.deepEqual(
      r.rows.map((row) => [row.line, row.password, row.userRoot]),
      [
        [2, 'p,w', undefined],
        [3, 'say "hi"', undefined],
        [4, 'x', '/two\r\nlines'],
        [6, 'x', undefined], // the value on lines 4–5 moves the next row to line 6
      ],
    );
  });

  test('line-break-in-value: a quoted user name or password holding a line break, named without quoting it', () => {
    const r = check(Buffer.from(`${HEADER}\r\na@example.com,alice,"Secret\r\nPart2"\r\nb@example.com,"bo\nb",x\r\n`));
    assert.deepEqual(summary(r), ['2:Password:line-break-in-value', '4:UserName:line-break-in-value']);
    assert.ok(!JSON.stringify(r).includes('Secret'));
  });

  test('accepts a UTF-8 BOM, CRLF line ends, non-ASCII names and trailing empty lines', () => {
    const r = check(Buffer.from(`\uFEFF${HEADER}\r\njürgen@exämple.de,Jürgen Weiß,pässwörd\r\nb@example.com,b,p\r\n\r\n,,\r\n\r\n`));
    assert.equal(r.valid, true);
    assert.equal(r.valid && r.rows.length, 2);
    assert.equal(r.valid && r.rows[0]?.userName, 'Jürgen Weiß');
  });

  test('accepts exactly 50,000 rows', () => {
    const rows = Array.from({ length: MAX_DATA_ROWS }, (_, i) => `u${i}@example.com,u${i},p${i}`);
    const r = check(file(HEADER, ...rows));
    assert.equal(r.valid, true);
    assert.equal(r.valid && r.rows.length, MAX_DATA_ROWS);
  });

  test('mixed line ends (a row appended with echo to an Excel file) leave no line-end character in a password', () => {
    for (const text of [`${HEADER}\r\na@example.com,a,pw1\r\nb@example.com,b,pw2\n`, `${HEADER}\na@example.com,a,pw1\r\nb@example.com,b,pw2\r\n`, `${HEADER}\r\na@example.com,a,pw1\nb@example.com,b,pw2\nc@example.com,c,pw3\r\n`]) {
      const r = check(Buffer.from(text));
      assert.equal(r.valid, true, JSON.stringify(r.valid || r.errors));
      assert.deepEqual(r.valid && r.rows.map((row) => [row.line, row.password]), text.includes('c@') ? [[2, 'pw1'], [3, 'pw2'], [4, 'pw3']] : [[2, 'pw1'], [3, 'pw2']]);
    }
  });

  test('a classic Mac (CR) file with a row appended with echo (LF) is read row by row; a header that holds data never shows its values', () => {
    const r = check(Buffer.from(`${HEADER}\ra@example.com,a,Pw1secret\rbad,b,Pw2secret\rc@example.com,c,Pw3secret\n`));
    assert.deepEqual(summary(r), ['3:EmailAddress:invalid-address']);
    assert.ok(!JSON.stringify(r).includes('secret'));
    const ok = check(Buffer.from(`${HEADER}\ra@example.com,a,Pw1secret\rc@example.com,c,Pw3secret\n`));
    assert.deepEqual(ok.valid && ok.rows.map((row) => [row.line, row.password]), [[2, 'Pw1secret'], [3, 'Pw3secret']]);
    // Rows run together into the header (the cause fixed above, or a missing line break):
    // the unknown "columns" are data and may be passwords.
    for (const secret of ['Pw9secret', 'Passw0rd']) {
      const merged = check(Buffer.from(`EmailAddress,UserName,Password\u2028a@example.com,a,${secret}\nb@example.com,b,p\n`));
      assert.equal(merged.valid, false);
      assert.ok(!JSON.stringify(merged).includes(secret), JSON.stringify(merged));
    }
  });

  test('classic Mac (CR only) line ends still give the right line numbers', () => {
    const r = check(Buffer.from(`${HEADER}\ra@example.com,a,p\rbad,b,p\r`));
    assert.deepEqual(summary(r), ['3:EmailAddress:invalid-address']);
  });
});

describe('one test per check', () => {
  test('empty-file: nothing, only a BOM, only blank lines, or a header without rows', () => {
    for (const content of ['', '\uFEFF', '\n\n  \n', `${HEADER}\n`, `${HEADER}\n\n,,\n`]) {
      const e = only(check(Buffer.from(content)), 'empty-file');
      assert.equal(e.line, undefined);
    }
    assert.match(only(check(Buffer.from(`${HEADER}\n`)), 'empty-file').message, /no data row/);
  });

  test('too-large: over 10 MB is rejected without parsing', () => {
    const row = (i: number) => `user${i}@example.com,user${i},pw${i},/users/${'x'.repeat(200)}${i}`;
    const lines = [`${HEADER},UserRoot`];
    let size = lines[0]!.length + 1;
    for (let i = 0; size <= MAX_FILE_BYTES; i++) {
      lines.push(row(i));
      size += row(i).length + 1;
    }
    const buf = file(...lines);
    assert.ok(buf.length > MAX_FILE_BYTES && lines.length - 1 < MAX_DATA_ROWS);
    const e = only(check(buf), 'too-large');
    assert.match(e.message, /10\.0 MB/);
  });

  test('not-utf8: names the line of the first invalid byte sequence and still checks the rest', () => {
    const latin1 = Buffer.concat([file(HEADER, 'a@example.com,a,p'), Buffer.from('b@example.com,J\xfcrgen,p\nc@example.com,M\xfcller,p\nbad,d,p\n', 'latin1')]);
    assert.deepEqual(summary(check(latin1)), ['3:-:not-utf8', '5:EmailAddress:invalid-address']);
    assert.match(errorsOf(check(latin1))[0]!.message, /2 lines/);
    const utf16 = Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(`${HEADER}\r\na@example.com,a,p\r\n`, 'utf16le')]);
    assert.match(only(check(utf16), 'not-utf8').message, /UTF-16/);
  });

  test('not-comma-separated: a header split by semicolons or tabs says so', () => {
    assert.match(only(check(file('EmailAddress;UserName;Password', 'a@example.com;a;p')), 'not-comma-separated').message, /semicolons/);
    const tabs = only(check(file('EmailAddress\tUserName\tPassword', 'a@example.com\ta\tp')), 'not-comma-separated');
    assert.match(tabs.message, /tabs/);
    assert.equal(tabs.line, 1);
    // A comma in a value of such a file (a password) adds no second, misleading problem.
    only(check(file('EmailAddress;UserName;Password', 'a@example.com;a;p', 'b@example.com;b;p,x')), 'not-comma-separated');
  });

  test('too-many-rows: 50,001 rows are rejected, on the line of row 50,001', () => {
    const rows = Array.from({ length: MAX_DATA_ROWS + 1 }, (_, i) => `u${i}@example.com,u${i},p${i}`);
    const e = only(check(file(HEADER, ...rows)), 'too-many-rows');
    assert.equal(e.line, MAX_DATA_ROWS + 2);
    assert.match(e.message, /50,001 data rows; at most 50,000/);
  });

  test('missing-column: says which, and how near misses are spelled', () => {
    assert.deepEqual(summary(check(file('EmailAddress,UserName', 'a@example.com,a'))), ['1:-:missing-column']);
    assert.match(errorsOf(check(file('EmailAddress,UserName', 'a@example.com,a')))[0]!.message, /no "Password" column/);
    for (const [header, written, meant] of [
      ['Email Address,UserName,Password', 'Email Address', 'EmailAddress'],
      ['emailaddress,UserName,Password', 'emailaddress', 'EmailAddress'],
      ['EmailAddress,User Name,Password', 'User Name', 'UserName'],
      ['EmailAddress,UserName,Pasword', 'Pasword', 'Password'],
      ['E-mail,UserName,Password', 'E-mail', 'EmailAddress'],
    ] as const) {
      const e = only(check(file(header, 'a@example.com,a,p')), 'missing-column');
      assert.equal(e.line, 1);
      assert.equal(e.column, written);
      assert.ok(e.message.includes(`"${written}"`) && e.message.includes(`spelled exactly "${meant}"`), e.message);
    }
  });

  test('missing-column: a data row where the header should be, without quoting its values', () => {
    const r = check(file('a@example.com,alice,TopSecret-1', 'b@example.com,bob,TopSecret-2'));
    const e = only(r, 'missing-column');
    assert.match(e.message, /looks like a data row/);
    assert.ok(!JSON.stringify(r).includes('TopSecret'));
    // Even when the password is a near miss of a column name.
    for (const pw of ['Passw0rd', 'Password1', 'P@ssw0rd', 'root', 'Passwort']) {
      const again = check(file(`alice@example.org,alice*admin,${pw}`, `bob@example.org,bob*admin,${pw}`));
      assert.match(only(again, 'missing-column').message, /looks like a data row/);
      assert.ok(!JSON.stringify(again).includes(pw), `${pw} leaked`);
    }
  });

  test('unknown-column: any other column, with a suggestion when it is close to one', () => {
    const r = check(file(`${HEADER},Department,User Root`, 'a@example.com,a,p,IT,/u/a'));
    assert.deepEqual(summary(r), ['1:Department:unknown-column', '1:User Root:unknown-column']);
    assert.match(errorsOf(r)[1]!.message, /did you mean "UserRoot"/);
    // An unnamed column between named ones is a stray comma…
    assert.deepEqual(summary(check(file('EmailAddress,,UserName,Password', 'a@example.com,,a,p'))), ['1:-:unknown-column']);
  });

  test('trailing unnamed columns, as Excel writes them, are accepted while they stay empty', () => {
    const r = check(file(`${HEADER},,`, 'a@example.com,a,p1,,', 'b@example.com,b,p2'));
    assert.deepEqual(r.valid && r.rows.map((row) => row.password), ['p1', 'p2']);
    assert.deepEqual(summary(check(file(`${HEADER},,`, 'a@example.com,a,p1,,x'))), ['2:-:column-count']);
  });

  test('duplicate-column: a header name twice', () => {
    const e = only(check(file(`${HEADER},UserName`, 'a@example.com,a,p,a')), 'duplicate-column');
    assert.equal(e.column, 'UserName');
    assert.match(e.message, /columns 2 and 4/);
  });

  test('column-count: the line and both counts', () => {
    const r = check(file(HEADER, 'a@example.com,a', 'b@example.com,b,p', 'c@example.com,c,p,q'));
    assert.deepEqual(summary(r), ['2:-:column-count', '4:-:column-count']);
    assert.match(errorsOf(r)[0]!.message, /2 columns, the header has 3/);
    assert.match(errorsOf(r)[1]!.message, /4 columns, the header has 3; a comma inside a value/);
  });

  test('quoting: a quote inside an unquoted value, text after a closing quote, a quote never closed', () => {
    const r = check(file(HEADER, 'a@example.com,a,pa"ss', 'b@example.com,b,"pa"ss', 'c@example.com,"c,p', 'd@example.com,d,p', 'bad,e,p'));
    assert.deepEqual(summary(r), ['2:Password:quoting', '3:Password:quoting', '4:UserName:quoting', '6:EmailAddress:invalid-address']);
    assert.equal(r.valid === false && r.rows, 5);
    const atEnd = only(check(file(HEADER, 'a@example.com,a,p', 'b@example.com,b,"p')), 'quoting');
    assert.equal(atEnd.line, 3);
    assert.match(atEnd.message, /never closed/);
  });

  test('quoting: a quote left open and closed by a stray one further down is caught', () => {
    const r = check(file(HEADER, 'a@example.com,a,"p', 'b@example.com,b,p', 'c@example.com,c,p"', 'd@example.com,d,p'));
    const e = only(r, 'quoting');
    assert.deepEqual([e.line, e.column], [2, 'Password']);
    assert.match(e.message, /lines 2–4/);
    assert.equal(check(file(`${HEADER},UserRoot`, 'a@example.com,a,p,"/multi', 'line, root"')).valid, true, 'one comma on an inner line is still a value');
  });

  test('quoting: an open quote in the header stops there', () => {
    assert.deepEqual(summary(check(file('EmailAddress,"UserName,Password', 'a@example.com,a,p'))), ['1:-:quoting']);
  });

  test('row-too-long: a row longer than csv-parse may buffer', () => {
    const r = check(file(HEADER, `a@example.com,a,${'p'.repeat(10_000)}`, 'bad,b,p'));
    assert.deepEqual(summary(r), ['2:Password:row-too-long', '3:EmailAddress:invalid-address']);
  });

  test('empty-line: before the last row (trailing ones are fine)', () => {
    const r = check(file(HEADER, 'a@example.com,a,p', '', '  ', 'b@example.com,b,p', ',,', 'c@example.com,c,p', '', ''));
    assert.deepEqual(summary(r), ['3:-:empty-line', '6:-:empty-line']);
    assert.match(errorsOf(r)[0]!.message, /lines 3–4 are empty/);
    assert.deepEqual(summary(check(file('', HEADER, 'a@example.com,a,p'))), ['1:-:empty-line']);
  });

  test('empty-value: line and column of each empty required value', () => {
    const r = check(file(`${HEADER},UserRoot`, ',a,p,', 'b@example.com, ,,'));
    assert.deepEqual(summary(r), ['2:EmailAddress:empty-value', '3:UserName:empty-value', '3:Password:empty-value']);
  });

  test('invalid-address: a password in the EmailAddress column (columns swapped) is never shown', () => {
    const r = check(file(HEADER, 'S3cr3t-Pw!,user01,user01@example.org'));
    assert.equal(r.valid, false);
    for (const e of errorsOf(r)) assert.ok(!e.message.includes('S3cr3t'), e.message);
    assert.match(errorsOf(r)[0]!.message, /are the columns swapped/);
  });

  test('invalid-address: quotes only the address, and says why', () => {
    const bad = ['alice', 'alice@', '@example.com', 'alice@@example.com', 'a b@example.com', 'alice@localhost', 'alice..b@example.com', 'alice@exa_mple.com', 'Alice <alice@example.com>', 'alice@example.123'];
    const r = check(file(HEADER, ...bad.map((a, i) => `"${a}",user${i},Pw-${i}`)));
    const errors = errorsOf(r);
    assert.deepEqual(
      errors.map((e) => [e.line, e.column, e.check]),
      bad.map((_, i) => [i + 2, 'EmailAddress', 'invalid-address']),
    );
    // Without an @ the value may be the row's password, the columns swapped: not shown.
    bad.forEach((a, i) => assert.ok(errors[i]!.message.startsWith(a.includes('@') ? JSON.stringify(a) : 'the value (not shown: without an @ it may be a password; are the columns swapped?)'), errors[i]!.message));
    assert.match(errors[0]!.message, /has no @/);
    assert.match(errors[5]!.message, /domain without a dot/);
    const good = ['o\'brien+tag@mail.example.co.uk', 'x@xn--bcher-kva.example', 'jürgen@bücher.example', 'a.b-c_d@sub-1.example.com'];
    assert.equal(check(file(HEADER, ...good.map((a, i) => `${a},u${i},p`))).valid, true);
  });

  test('invalid-address: an invisible character pasted into an address is named', () => {
    const e = only(check(file(HEADER, 'alice\u200b@example.org,a,p')), 'invalid-address');
    assert.match(e.message, /contains the invisible character U\+200B/);
  });

  test('duplicate-address: one mailbox spelled in another Unicode form or IDN encoding', () => {
    const r = check(file(HEADER, 'user@bücher.de,a,p', 'user@xn--bcher-kva.de,b,p', 'j\u00f3se@example.org,c,p', 'jo\u0301se@example.org,d,p'));
    assert.deepEqual(summary(r), ['3:EmailAddress:duplicate-address', '5:EmailAddress:duplicate-address']);
  });

  test('duplicate-address: both lines, compared ignoring case', () => {
    const r = check(file(HEADER, 'alice@example.com,a,p', 'bob@example.com,b,p', 'Alice@Example.COM,a2,p', 'alice@example.com,a3,p'));
    assert.deepEqual(summary(r), ['4:EmailAddress:duplicate-address', '5:EmailAddress:duplicate-address']);
    assert.match(errorsOf(r)[0]!.message, /"Alice@Example.COM" is also on line 2/);
    assert.match(errorsOf(r)[1]!.message, /also on line 2/);
  });

  test('in-active-batch: the hook for batch creation (async and sync), compared ignoring case', async () => {
    const buf = file(HEADER, 'alice@example.com,a,p', 'Bob@example.com,b,p', 'carol@example.com,c,p', 'bad,d,p');
    let asked: string[] = [];
    const r = await validateMigrationFile(buf, {
      alreadyInActiveBatch: async (addresses) => {
        asked = addresses;
        return new Map([['bob@EXAMPLE.com', 'spring']]);
      },
    });
    assert.deepEqual(asked, ['alice@example.com', 'Bob@example.com', 'carol@example.com']);
    assert.deepEqual(summary(r), ['3:EmailAddress:in-active-batch', '5:EmailAddress:invalid-address']);
    // Which batch, so the admin knows where to look.
    assert.match(errorsOf(r)[0]!.message, /already in another active batch \("spring"\)/);
    const sync = validateMigrationFileSync(file(HEADER, 'alice@example.com,a,p'), { alreadyInActiveBatch: () => new Map([['ALICE@example.com', 'spring']]) });
    assert.deepEqual(summary(sync), ['2:EmailAddress:in-active-batch']);
    assert.equal((await validateMigrationFile(file(HEADER, 'alice@example.com,a,p'), { alreadyInActiveBatch: () => new Map() })).valid, true);
  });

  test('truncated: past the cap, one "… and N more" entry', () => {
    const r = check(file(HEADER, ...Array.from({ length: 150 }, (_, i) => `bad${i},u${i},p${i}`)));
    const errors = errorsOf(r);
    assert.equal(errors.length, 101);
    assert.equal(errors[99]!.line, 101);
    assert.deepEqual(errors[100], { check: 'truncated', message: '… and 50 more problems (only the first 100 are listed)' });
    assert.equal(errorsOf(validateMigrationFileSync(file(HEADER, 'bad,a,p', 'bad2,b,p'), { maxProblems: 1 })).length, 2);
  });

  test('every check name is one of CHECK_NAMES', () => {
    assert.equal(new Set(CHECK_NAMES).size, CHECK_NAMES.length);
    assert.ok(CHECK_NAMES.includes('in-active-batch') && CHECK_NAMES.includes('truncated'));
  });
});

test('a file with many problems gets every one, each with its line', () => {
  const r = check(
    file(
      'EmailAddress,User Name,Password,Department', // line 1: UserName misspelt, an unknown column
      'alice@example.com,alice,Secret-A1,IT', // 2: fine
      'bob(at)example.com,bob,Secret-B2,IT', // 3: invalid address
      ',carol,Secret-C3,IT', // 4: empty address
      'ALICE@example.com,alice2,Secret-D4,IT', // 5: duplicate of line 2
      'dave@example.com,dave,Secret-E5', // 6: 3 columns
      '', // 7: empty line in the middle
      'erin@example.com,erin,Sec"ret-F6,IT', // 8: quote in an unquoted value
      'frank@example.com,frank,"Secret-G7,IT', // 9: quote never closed on its line
      'grace@example.com,grace,,IT', // 10: empty password
      '', // 11, 12: trailing, fine
      '',
    ),
  );
  assert.deepEqual(summary(r), [
    '1:Department:unknown-column',
    '1:User Name:missing-column',
    '3:EmailAddress:invalid-address',
    '4:EmailAddress:empty-value',
    '5:EmailAddress:duplicate-address',
    '6:-:column-count',
    '7:-:empty-line',
    '8:Password:quoting',
    '9:Password:quoting',
    '10:Password:empty-value',
  ]);
  assert.equal(r.valid === false && r.rows, 8);
  assert.ok(!/Secret-/.test(JSON.stringify(r)));
});

describe('passwords never appear', () => {
  const secrets = Array.from({ length: 8 }, (_, i) => `Zq9-secret-${i}-xK`);
  const buf = file(
    `${HEADER},Extra`, // 1: an unknown column
    `${secrets[0]},alice,${secrets[0]},x`, // 2: the password pasted into the address column too
    `carol@example.com,carol,${secrets[2]}`, // 3: 3 columns
    `dave@example.com,dave,${secrets[3]}",x`, // 4: a quote in an unquoted password
    `${secrets[4]}@,erin,${secrets[4]},x`, // 5: an invalid address that contains the password
    `frank@example.com,frank,${secrets[5]},${'y'.repeat(9000)}`, // 6: too long
    `grace@example.com,,${secrets[7]},x`, // 7: empty user name
    `Grace@example.com,grace2,${secrets[6]},x`, // 8: the same address as line 7
    `bob@example.com,bob,"${secrets[1]}`, // 9: a quote never closed
  );

  test('in the problems, as JSON or as text', () => {
    const r = check(buf);
    const out = JSON.stringify(r) + inspect(r, { depth: 10 }) + String(r);
    for (const s of secrets) assert.ok(!out.includes(s), `${s} leaked: ${out}`);
    assert.deepEqual(summary(r), [
      '1:Extra:unknown-column',
      '2:EmailAddress:invalid-address',
      '3:-:column-count',
      '4:Password:quoting',
      '5:EmailAddress:invalid-address',
      '6:-:row-too-long',
      '7:UserName:empty-value',
      '8:EmailAddress:duplicate-address',
      '9:Password:quoting',
    ]);
  });

  test('in a valid file\'s rows once logged or serialised', () => {
    const r = check(file(HEADER, `a@example.com,a,${secrets[0]}`));
    assert.equal(r.valid, true);
    assert.ok(r.valid && r.rows[0]?.password === secrets[0], 'the password is there for the code that needs it');
    assert.ok(!JSON.stringify(r).includes(secrets[0]!));
    assert.ok(!inspect(r, { depth: 10 }).includes(secrets[0]!));
  });
});
