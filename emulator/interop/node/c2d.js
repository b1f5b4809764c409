// Receives cloud-to-device messages with Microsoft's Node.js device SDK,
// connected to an iotemu hub with a SAS connection string, and prints what the
// SDK made of each as one JSON line, in arrival order: the Go test compares
// them with what it sent through the admin API, some while the device was
// offline. IOTEMU_C2D_COUNT says how many to wait for (default 1). Settings
// come from the environment; trust in the emulator's TLS CA comes from
// NODE_EXTRA_CA_CERTS.
'use strict';

const { Client } = require('azure-iot-device');
const { Mqtt: HubMqtt } = require('azure-iot-device-mqtt');

function need(name) {
  const v = process.env[name];
  if (!v) {
    throw new Error(`environment variable ${name} is required`);
  }
  return v;
}

async function main() {
  const connectionString = `HostName=${need('IOTEMU_HUB_HOST')};DeviceId=${need('IOTEMU_DEVICE_ID')};` +
    `SharedAccessKey=${need('IOTEMU_DEVICE_KEY')};GatewayHostName=${need('IOTEMU_HUB_ADDRESS')}`;
  const want = Number(process.env.IOTEMU_C2D_COUNT || '1');
  const client = Client.fromConnectionString(connectionString, HubMqtt);
  await client.open();
  const messages = [];
  const received = new Promise((resolve) => {
    client.on('message', (msg) => { // the first listener subscribes to C2D
      messages.push(msg);
      client.complete(msg, () => {});
      if (messages.length === want) {
        resolve();
      }
    });
  });
  await received;
  await client.close();
  for (const msg of messages) {
    const properties = {};
    for (let i = 0; i < msg.properties.count(); i++) {
      const p = msg.properties.getItem(i);
      properties[p.key] = p.value;
    }
    process.stdout.write(JSON.stringify({
      message_id: msg.messageId,
      to: msg.to,
      content_type: msg.contentType,
      correlation_id: msg.correlationId,
      expiry_time_utc: msg.expiryTimeUtc,
      body: msg.data.toString('utf8'),
      properties,
    }) + '\n');
  }
}

const timer = setTimeout(() => {
  process.stderr.write('c2d: no message within 60 s\n');
  process.exit(2);
}, 60000);
timer.unref();

main().then(() => process.exit(0), (err) => {
  process.stderr.write(`c2d failed: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
