// Drives iotemu with Microsoft's own Node.js device SDKs: symmetric-key
// provisioning through DPS, then the assigned hub with a SAS connection string,
// telemetry with properties, and a reported-property update. It prints one JSON
// line with what the SDKs reported, for the Go test to check against what the
// emulator recorded. Settings come from the environment (see below); trust in
// the emulator's TLS CA comes from NODE_EXTRA_CA_CERTS.
'use strict';

const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Mqtt: ProvisioningMqtt } = require('azure-iot-provisioning-device-mqtt');
const { SymmetricKeySecurityClient } = require('azure-iot-security-symmetric-key');
const { Client, Message } = require('azure-iot-device');
const { Mqtt: HubMqtt } = require('azure-iot-device-mqtt');

function need(name) {
  const v = process.env[name];
  if (!v) {
    throw new Error(`environment variable ${name} is required`);
  }
  return v;
}

async function main() {
  const dpsHost = need('IOTEMU_DPS');          // host:port
  const idScope = need('IOTEMU_ID_SCOPE');
  const registrationId = need('IOTEMU_REGISTRATION_ID');
  const deviceKey = need('IOTEMU_DEVICE_KEY');  // base64
  const hubAddress = need('IOTEMU_HUB_ADDRESS'); // host:port the assigned hub listens on

  const security = new SymmetricKeySecurityClient(registrationId, deviceKey);
  const provisioning = ProvisioningDeviceClient.create(dpsHost, idScope, new ProvisioningMqtt(), security);
  const registration = await provisioning.register();

  // GatewayHostName carries the port; HostName stays the assigned hub's name,
  // which the SDK puts in the MQTT username and the SAS resource.
  const connectionString = `HostName=${registration.assignedHub};DeviceId=${registration.deviceId};` +
    `SharedAccessKey=${deviceKey};GatewayHostName=${hubAddress}`;
  const client = Client.fromConnectionString(connectionString, HubMqtt);
  await client.open();

  const message = new Message(JSON.stringify({ temperature: 21.5 }));
  message.contentType = 'application/json';
  message.contentEncoding = 'utf-8';
  message.properties.add('sdk', 'node');
  await client.sendEvent(message);

  const twin = await client.getTwin();
  await new Promise((resolve, reject) => {
    twin.properties.reported.update({ interop: { sdk: 'node', ok: true } }, (err) => (err ? reject(err) : resolve()));
  });
  // The SDK merges the patch locally without the hub's new $version; read
  // the twin again to see what the hub holds.
  const fresh = await new Promise((resolve, reject) => {
    twin.get((err, t) => (err ? reject(err) : resolve(t)));
  });
  const reportedVersion = fresh.properties.reported.$version;
  await client.close();

  process.stdout.write(JSON.stringify({
    assigned_hub: registration.assignedHub,
    device_id: registration.deviceId,
    registration_status: registration.status,
    reported_version: reportedVersion,
  }) + '\n');
}

main().then(() => process.exit(0), (err) => {
  process.stderr.write(`interop failed: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
