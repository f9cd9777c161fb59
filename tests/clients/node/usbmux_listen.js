// node-usbmux (npm: usbmux, Sterling DeMille's client, the library behind
// its `irelay` command) against a socket: its Listen, one JSON line per
// event on stdout. A line "tunnel UDID PORT" on stdin opens its getTunnel
// (ListDevices by UDID, then Connect) to devsvc's ECHO service on that
// port and reports whether 64 KiB came back intact.
//   node usbmux_listen.js SOCKET
'use strict';
const usbmux = require('usbmux');
const readline = require('readline');

usbmux.address = { path: process.argv[2] };
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');

const l = usbmux.createListener();
l.on('attached', (udid) => out({ ev: 'attached', udid }));
l.on('detached', (udid) => out({ ev: 'detached', udid }));
l.on('error', (e) => out({ ev: 'error', msg: String(e) }));
l.on('end', () => out({ ev: 'end' }));

function echo(udid, port) {
  usbmux.getTunnel(port, { udid }).then((sock) => {
    const payload = Buffer.alloc(65536, 0x5a);
    const chunks = [];
    let n = 0;
    sock.on('data', (d) => {
      chunks.push(d);
      n += d.length;
      if (n >= payload.length) {
        out({ ev: 'tunnel', udid, ok: Buffer.concat(chunks).equals(payload) });
        sock.end();
      }
    });
    sock.on('error', (e) => out({ ev: 'tunnel', udid, error: String(e) }));
    sock.write('ECHO\n');
    sock.write(payload);
  }, (e) => out({ ev: 'tunnel', udid, error: String(e) }));
}

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const [cmd, udid, port] = line.trim().split(' ');
  if (cmd === 'tunnel')
    echo(udid, Number(port));
});
