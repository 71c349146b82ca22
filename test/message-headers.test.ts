/** Naming a skipped message: the Subject as a reader would see it, whatever its encoding. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { subjectOf } from '../src/sync/message-headers.js';

describe('subjectOf', () => {
  test('RFC 2047 words, raw UTF-8, and raw Latin-1 from old mailers', () => {
    assert.equal(subjectOf(Buffer.from('Subject: =?ISO-8859-1?Q?R=E9sum=E9?=\r\n\r\nx')), 'Résumé');
    assert.equal(subjectOf(Buffer.from('Subject: Grüße aus München\r\n\r\nx', 'utf8')), 'Grüße aus München');
    assert.equal(subjectOf(Buffer.from('Subject: Résumé für März\r\n\r\nx', 'latin1')), 'Résumé für März');
  });

  test('a NUL or control character an encoded word decodes to is not stored (PostgreSQL text refuses NUL)', () => {
    assert.equal(subjectOf(Buffer.from('Subject: =?utf-8?q?a=00b=07c?=\r\n\r\nx')), 'a b c');
  });

  test('a head cut inside a UTF-8 character is still read as UTF-8', () => {
    const whole = Buffer.from('Subject: Grüße\r\nX-Long: ü', 'utf8');
    assert.equal(subjectOf(whole.subarray(0, whole.length - 1)), 'Grüße');
  });
});
