// Appium's usbmuxd client (appium-ios-device, used by the XCUITest driver
// and WebDriverAgent tooling) against a socket, one line of JSON out.
//   node usbmux_client.js SOCKET OP...
//   OP: list | buid | pair:UDID | echo:DEVICEID:PORT (devsvc's ECHO service)
// Every OP runs on one Usbmux connection, as Appium does (tags 0, 1, ...),
// except echo, which needs a connection of its own (it becomes the pipe).
'use strict';
const { Usbmux, getDefaultSocket } = require('appium-ios-device/build/lib/usbmux');

async function main() {
  const [path, ...ops] = process.argv.slice(2);
  const out = {};
  const mux = new Usbmux(await getDefaultSocket({ socketPath: path }));
  try {
    for (const op of ops) {
      if (op === 'list') {
        const devs = await mux.listDevices();
        out.list = devs.map((d) => ({ id: d.DeviceID, serial: d.Properties.SerialNumber,
                                      type: d.Properties.ConnectionType }));
      } else if (op === 'buid') {
        out.buid = await mux.readBUID();
      } else if (op.startsWith('pair:')) {
        out.pair = await mux.readPairRecord(op.slice(5));
      } else if (op.startsWith('echo:')) {
        const [, id, port] = op.split(':');
        const c = new Usbmux(await getDefaultSocket({ socketPath: path }));
        const sock = await c.connect(Number(id), Number(port));
        const payload = Buffer.alloc(65536, 0x5a);
        const got = await new Promise((resolve, reject) => {
          const chunks = [];
          let n = 0;
          sock.on('data', (b) => {
            chunks.push(b);
            n += b.length;
            if (n >= payload.length) resolve(Buffer.concat(chunks));
          });
          sock.on('error', reject);
          sock.on('end', () => resolve(Buffer.concat(chunks)));
          sock.resume(); // unpiped from the decoder, the socket is paused
          sock.write(Buffer.concat([Buffer.from('ECHO\n'), payload]));
        });
        out.echo = got.equals(payload) ? 'ok' : `mismatch (${got.length} bytes)`;
        sock.destroy();
      } else {
        throw new Error(`unknown op ${op}`);
      }
    }
  } finally {
    mux.close();
  }
  console.log(JSON.stringify(out));
}

main().then(() => process.exit(0), (e) => {
  console.error(`usbmux_client: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
