// Stands in for the `socks` package in the bundle (scripts/bundle.mjs): imapflow imports it
// for its SOCKS proxy option, which mailferry never sets, and loading it (with its IP
// address library) cost every CLI start several milliseconds.
'use strict';
exports.SocksClient = {
  createConnection() {
    throw new Error('SOCKS proxies are not supported by mailferry');
  },
};
