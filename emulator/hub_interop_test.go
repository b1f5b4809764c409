package emulator

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// hubInteropScript drives the hub with Microsoft's Node.js device SDK over
// X.509: it answers the direct method "reboot", acknowledges a desired
// property in its reported properties, and says what it saw on stdout, one
// line per event.
const hubInteropScript = `
'use strict';
const fs = require('fs');
const { Client, X509AuthenticationProvider } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const env = (n) => { if (!process.env[n]) throw new Error(n + ' is required'); return process.env[n]; };
const say = (o) => process.stdout.write(JSON.stringify(o) + '\n');

async function main() {
  // An x509=true connection string drops GatewayHostName, so the provider
  // is built directly: the username names HUB_HOST, the socket goes to
  // HUB_ADDRESS.
  const auth = new X509AuthenticationProvider({
    host: env('HUB_HOST'), deviceId: env('DEVICE_ID'), gatewayHostName: env('HUB_ADDRESS'),
    x509: { cert: fs.readFileSync(env('CERT_FILE'), 'utf8'), key: fs.readFileSync(env('KEY_FILE'), 'utf8') },
  });
  const client = Client.fromAuthenticationProvider(auth, Mqtt);
  let done;
  const finished = new Promise((resolve) => { done = resolve; });
  client.onDeviceMethod('reboot', (req, res) => {
    res.send(201, { rebooting: true, got: req.payload }, (err) => say({ event: 'method', error: err ? String(err) : null }));
  });
  await client.open();
  const twin = await client.getTwin();
  twin.on('properties.desired', (delta) => {
    if (delta.interval === undefined) return;
    twin.properties.reported.update({ interval_ack: delta.interval }, (err) => {
      say({ event: 'desired', version: delta.$version, interval: delta.interval, error: err ? String(err) : null });
      done();
    });
  });
  say({ event: 'ready', desired_version: twin.properties.desired.$version });
  await finished;
  await client.close();
}
main().then(() => process.exit(0), (err) => { process.stderr.write('interop failed: ' + (err && err.stack || err) + '\n'); process.exit(1); });
`

// Microsoft's Node.js SDK connects with an issued certificate, takes a direct
// method and a desired-property push, and reports back.
func TestHubInteropNodeSDKX509(t *testing.T) {
	node := requireNodeSDKs(t)
	env := newHubEnv(t, nil)
	dev := env.addIssuedDevice(t, "node-x509")
	dir := t.TempDir()
	var chainPEM []byte
	for _, der := range dev.cert.Certificate {
		chainPEM = append(chainPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(dev.cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, chainPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "-e", hubInteropScript)
	cmd.Dir = filepath.Join("interop", "node")
	cmd.Env = append(os.Environ(),
		"NODE_EXTRA_CA_CERTS="+env.ep.TLSCAFile,
		"HUB_HOST="+hub1Host, "HUB_ADDRESS="+env.ep.Hubs["hub1"].Address,
		"DEVICE_ID="+dev.id, "CERT_FILE="+certFile, "KEY_FILE="+keyFile,
	)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	events := make(chan map[string]any, 8)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var ev map[string]any
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				events <- ev
			}
		}
	}()
	next := func(want string) map[string]any {
		t.Helper()
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("the SDK exited before %q: %s", want, stderr.String())
			}
			if ev["event"] != want {
				t.Fatalf("SDK event %v, want %q", ev, want)
			}
			return ev
		case <-ctx.Done():
			t.Fatalf("no %q from the SDK: %s", want, stderr.String())
		}
		return nil
	}

	if ev := next("ready"); ev["desired_version"] != float64(1) {
		t.Errorf("the SDK read desired $version %v, want 1", ev["desired_version"])
	}
	if d := env.device(t, dev.id); !d.Connected || d.AuthMethod != "x509" {
		t.Fatalf("State: connected %t, auth %q", d.Connected, d.AuthMethod)
	}
	// The SDK subscribes in the background; the hub answers 404 until then.
	h := env.hub1()
	deadline := time.Now().Add(hubWait)
	for s := h.session(dev.id); s == nil || !s.subscribed(hubFilterMethods) || !s.subscribed(hubFilterDesired); s = h.session(dev.id) {
		if time.Now().After(deadline) {
			t.Fatal("the SDK never subscribed to methods and desired properties")
		}
		time.Sleep(10 * time.Millisecond)
	}

	status, payload, err := h.InvokeMethod(ctx, dev.id, "reboot", json.RawMessage(`{"delay":5}`), hubWait)
	if err != nil {
		t.Fatal(err)
	}
	var answer any
	if err := json.Unmarshal(payload, &answer); err != nil || status != 201 || hubJSON(t, answer) != `{"got":{"delay":5},"rebooting":true}` {
		t.Errorf("method answered %d %s", status, payload)
	}
	if ev := next("method"); ev["error"] != nil {
		t.Errorf("the SDK's method response failed: %v", ev["error"])
	}

	var version int
	patch := map[string]any{"interval": 42}
	env.e.State().WithDevice(dev.id, func(d *Device) {
		MergePatch(d.Twin.Desired, patch)
		d.Twin.DesiredVersion++
		version = d.Twin.DesiredVersion
	})
	h.PushDesired(dev.id, patch, version)
	if ev := next("desired"); ev["error"] != nil || ev["version"] != float64(version) || ev["interval"] != float64(42) {
		t.Errorf("the SDK saw the desired patch as %v, want $version %d and interval 42", ev, version)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("node: %v\n%s", err, stderr.String())
	}
	var reported map[string]any
	var reportedVersion int
	env.e.State().WithDevice(dev.id, func(d *Device) { reported, reportedVersion = d.Twin.Reported, d.Twin.ReportedVersion })
	if n, _ := reported["interval_ack"].(json.Number); n != "42" || reportedVersion != 2 {
		t.Errorf("reported properties %v at $version %d, want interval_ack 42 at 2", reported, reportedVersion)
	}
}
