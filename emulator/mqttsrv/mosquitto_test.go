package mqttsrv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// mosquittoTool finds a mosquitto command-line client. CI must have it, so there a missing one fails.
func mosquittoTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		msg := fmt.Sprintf("%s not found (%v); install it with: sudo apt-get install -y mosquitto-clients", name, err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return path
}

// Eclipse Mosquitto's clients (libmosquitto over OpenSSL) are an implementation independent of both Go's TLS
// stack and paho.
func TestMosquittoClients(t *testing.T) {
	pubPath, subPath := mosquittoTool(t, "mosquitto_pub"), mosquittoTool(t, "mosquitto_sub")
	pki := newTestPKI(t)
	env := startServer(t, pki, Options{})
	dir := t.TempDir()
	files := map[string][]byte{"ca.pem": pki.rootsPEM, "client.pem": pki.clientCertPEM, "client.key": pki.clientKeyPEM}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, port, _ := net.SplitHostPort(env.addr)
	common := []string{"-h", "127.0.0.1", "-p", port, "-V", "mqttv311", "--cafile", filepath.Join(dir, "ca.pem")}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()

	// The subscriber waits for one message, prints it and disconnects.
	sub := exec.CommandContext(ctx, subPath, append(common, "-i", "mosq-sub", "-t", "reply/#", "-q", "1", "-C", "1", "-v")...)
	var subOut, subErr bytes.Buffer
	sub.Stdout, sub.Stderr = &subOut, &subErr
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	subSession := recv(t, env.handler.sessions, "subscriber session")
	if got := recv(t, subSession.subscribed, "subscribe"); got[0] != (Subscription{Filter: "reply/#", QoS: 1}) {
		t.Fatalf("subscriber asked for %+v", got)
	}

	// The publisher presents a client certificate and sends one QoS 1 message, exiting 0 only on PUBACK.
	pub := exec.CommandContext(ctx, pubPath, append(common, "-i", "mosq-pub", "-u", "user", "-P", "pw",
		"--cert", filepath.Join(dir, "client.pem"), "--key", filepath.Join(dir, "client.key"),
		"-t", "telemetry/1", "-q", "1", "-m", "hello from mosquitto")...)
	if out, err := pub.CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v\n%s", err, out)
	}
	pubSession := recv(t, env.handler.sessions, "publisher session")
	if certs := pubSession.req.PeerCertificates(); len(certs) != 1 || certs[0].Subject.CommonName != "device-1" {
		t.Fatalf("publisher's certificates %v, want device-1", certs)
	}
	if m := recv(t, pubSession.published, "message"); m.Topic != "telemetry/1" || m.QoS != 1 || string(m.Payload) != "hello from mosquitto" {
		t.Fatalf("session got %+v", m)
	}
	if reason := recv(t, pubSession.closed, "publisher Session.Closed"); !errors.Is(reason, ErrClientDisconnected) {
		t.Fatalf("publisher closed with %v, want ErrClientDisconnected", reason)
	}

	d, err := env.handler.registry.Lookup("mosq-sub").Publish("reply/1", []byte("hello from the server"), 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Wait(); err != nil {
		t.Fatalf("mosquitto_sub: %v\n%s", err, subErr.String())
	}
	if got := strings.TrimSpace(subOut.String()); got != "reply/1 hello from the server" {
		t.Fatalf("mosquitto_sub printed %q", got)
	}
	recv(t, d.Done(), "PUBACK from mosquitto_sub")
	if d.Err() != nil {
		t.Fatal(d.Err())
	}
	if reason := recv(t, subSession.closed, "subscriber Session.Closed"); !errors.Is(reason, ErrClientDisconnected) {
		t.Fatalf("subscriber closed with %v, want ErrClientDisconnected", reason)
	}
}
