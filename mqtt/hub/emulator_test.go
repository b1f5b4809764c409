package hub_test

// End-to-end tests against the real emulator, in process, over TLS on
// loopback: the session as the agent will use it.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/dpsagent/dpsagent/emulator"
	"github.com/dpsagent/dpsagent/emulator/pki"
	"github.com/dpsagent/dpsagent/mqtt/hub"
	"github.com/dpsagent/dpsagent/tpm/keys"
	"github.com/dpsagent/dpsagent/tpm/softkey"
)

const hubName = "hub1"

// testEmulator is a running emulator and what a test needs to reach it.
type testEmulator struct {
	e       *emulator.Emulator
	ep      *emulator.Endpoints
	dataDir string
	hub     emulator.HubEndpoint
}

func startEmulator(t *testing.T, configure func(*emulator.Config)) *testEmulator {
	t.Helper()
	cfg := emulator.Config{
		DPS:   emulator.ListenerConfig{Listen: "127.0.0.1:0"},
		Hubs:  []emulator.HubConfig{{Name: hubName, Host: "127.0.0.1", Listen: "127.0.0.1:0"}},
		Admin: emulator.ListenerConfig{Listen: "127.0.0.1:0"},
	}
	cfg.Certificates.CredentialAPIDelay = emulator.Duration(100 * time.Millisecond)
	if configure != nil {
		configure(&cfg)
	}
	dir := t.TempDir()
	e, err := emulator.New(cfg, dir, emulator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ep, err := e.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return &testEmulator{e: e, ep: ep, dataDir: dir, hub: ep.Hubs[hubName]}
}

// options are a session's options for this emulator's hub.
func (te *testEmulator) options(t *testing.T, deviceID string, auth hub.Auth) hub.Options {
	return hub.Options{
		Host:            te.hub.Host,
		Address:         te.hub.Address,
		DeviceID:        deviceID,
		Auth:            auth,
		TrustBundleFile: te.ep.TLSCAFile,
		Logger:          zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)),
		// No jitter wait in tests: reconnects are immediate.
		Random:          func() float64 { return 0 },
		ResponseTimeout: 10 * time.Second,
	}
}

// sasDevice registers a device with a symmetric key on hub1.
func (te *testEmulator) sasDevice(deviceID string) []byte {
	key := []byte("0123456789abcdef0123456789abcdef")
	te.e.State().AssignDevice(emulator.Device{DeviceID: deviceID, RegistrationID: deviceID, Hub: hubName, SymmetricKeys: [][]byte{key}, Issued: true}, false)
	return key
}

// identity is a device key and the certificate the emulator's PKI issued
// for it, swappable as the agent swaps them after a renewal.
type identity struct {
	mu   sync.Mutex
	cert *tls.Certificate
}

func (id *identity) get() (*tls.Certificate, error) {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.cert, nil
}

func (id *identity) set(c *tls.Certificate) {
	id.mu.Lock()
	defer id.mu.Unlock()
	id.cert = c
}

// x509Device registers a device accepting certificates of the emulator's
// PKI and issues it one, through the device CA the emulator persisted in its
// data directory.
func (te *testEmulator) x509Device(t *testing.T, deviceID string) *identity {
	t.Helper()
	te.e.State().AssignDevice(emulator.Device{DeviceID: deviceID, RegistrationID: deviceID, Hub: hubName, Issued: true}, false)
	key := newKey(t)
	ca, err := pki.OpenDeviceCA(te.dataDir, pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(newCSR(t, key, deviceID))
	if err != nil {
		t.Fatal(err)
	}
	chain, err := ca.Issue(csr, pki.IssueOptions{DeviceID: deviceID, Lifetime: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return &identity{cert: tlsCert(t, key, chain)}
}

func newKey(t *testing.T) keys.Key {
	t.Helper()
	k, err := (&softkey.Backend{}).CreateKey(keys.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newCSR(t *testing.T, k keys.Key, cn string) []byte {
	t.Helper()
	der, err := keys.NewCSR(k, cn)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func tlsCert(t *testing.T, k keys.Key, chain [][]byte) *tls.Certificate {
	t.Helper()
	c, err := keys.TLSCertificate(k, chain)
	if err != nil {
		t.Fatal(err)
	}
	return &c
}

// adminClient keeps no idle connections, whose goroutines would outlive a
// test.
var adminClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// admin calls the emulator's admin API and decodes the JSON answer into out.
func (te *testEmulator) admin(t *testing.T, method, path string, body any, out any) int {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, te.ep.Admin+path, r)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := adminClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, data, err)
		}
	}
	return resp.StatusCode
}

// connectionLog records OnConnectionChange calls.
type connectionLog struct {
	mu     sync.Mutex
	events []connEvent
	notify chan connEvent
}

type connEvent struct {
	connected bool
	err       error
}

func newConnectionLog() *connectionLog { return &connectionLog{notify: make(chan connEvent, 64)} }

func (l *connectionLog) record(connected bool, err error) {
	l.mu.Lock()
	l.events = append(l.events, connEvent{connected, err})
	l.mu.Unlock()
	select {
	case l.notify <- connEvent{connected, err}:
	default:
	}
}

// waitFor waits for an event that pred accepts.
func (l *connectionLog) waitFor(t *testing.T, what string, pred func(connEvent) bool) connEvent {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case ev := <-l.notify:
			if pred(ev) {
				return ev
			}
		case <-timeout:
			l.mu.Lock()
			defer l.mu.Unlock()
			t.Fatalf("no %s; connection events so far: %+v", what, l.events)
		}
	}
}

func connect(t *testing.T, opts hub.Options) *hub.Client {
	t.Helper()
	c, err := hub.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestEmulatorSASSession(t *testing.T) {
	te := startEmulator(t, nil)
	const id = "sas-device"
	key := te.sasDevice(id)

	type desiredUpdate struct {
		patch   map[string]any
		version int
	}
	desired := make(chan desiredUpdate, 8)
	methods := make(chan string, 8)
	opts := te.options(t, id, hub.Auth{SymmetricKey: key})
	opts.OnDesired = func(patch map[string]any, version int) { desired <- desiredUpdate{patch, version} }
	opts.OnMethod = func(_ context.Context, name string, payload []byte) (int, []byte) {
		methods <- name + " " + string(payload)
		return 201, []byte(`{"rebooting":true}`)
	}
	c := connect(t, opts)
	ctx := testContext(t)

	// After connecting, the session read the twin and passed on its desired
	// section, at the version a new twin has.
	select {
	case u := <-desired:
		if u.version != 1 || len(u.patch) != 0 {
			t.Errorf("first desired update = %+v, want the empty desired section at version 1", u)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no desired properties after connecting")
	}

	// Telemetry with system and application properties.
	if err := c.SendTelemetry(ctx, []byte(`{"temp":21.5}`), map[string]string{"$.ct": "application/json", "$.ce": "utf-8", "alert level": "a&b"}); err != nil {
		t.Fatal(err)
	}
	var msgs []emulator.TelemetryMessage
	te.admin(t, "GET", "/api/devices/"+id+"/telemetry", nil, &msgs)
	if len(msgs) != 1 || msgs[0].Body != `{"temp":21.5}` || msgs[0].Properties["$.ct"] != "application/json" ||
		msgs[0].Properties["$.ce"] != "utf-8" || msgs[0].Properties["alert level"] != "a&b" {
		t.Errorf("the hub received %+v", msgs)
	}

	// Reported properties, then the twin as the device reads it back.
	v, err := c.UpdateReported(ctx, map[string]any{"firmware": "1.2.3", "certificate": map[string]any{"validUntil": "2026-01-01T00:00:00Z"}})
	if err != nil {
		t.Fatal(err)
	}
	if v != 2 {
		t.Errorf("reported version after one patch = %d, want 2", v)
	}
	if v, err = c.UpdateReported(ctx, map[string]any{"firmware": nil}); err != nil || v != 3 {
		t.Fatalf("deleting a reported property: version %d, %v", v, err)
	}
	d, r, dv, rv, err := c.GetTwin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, has := r["firmware"]; has || r["certificate"] == nil || rv != 3 || dv != 1 || len(d) != 0 {
		t.Errorf("twin = desired %v (v%d), reported %v (v%d)", d, dv, r, rv)
	}

	// A desired update pushed through the service side.
	te.admin(t, "PATCH", "/api/devices/"+id+"/twin/desired", map[string]any{"telemetryInterval": 30}, nil)
	select {
	case u := <-desired:
		if u.version != 2 || u.patch["telemetryInterval"] != 30.0 {
			t.Errorf("desired update = %+v, want telemetryInterval 30 at version 2", u)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the desired update was not delivered")
	}

	// A direct method round trip.
	var answer struct {
		Status  int             `json:"status"`
		Payload json.RawMessage `json:"payload"`
	}
	code := te.admin(t, "POST", "/api/devices/"+id+"/methods/reboot", map[string]any{"payload": map[string]any{"delay": 5}, "timeout_seconds": 5}, &answer)
	var compact bytes.Buffer
	_ = json.Compact(&compact, answer.Payload)
	if code != 200 || answer.Status != 201 || compact.String() != `{"rebooting":true}` {
		t.Errorf("method answer = HTTP %d, %d %s", code, answer.Status, answer.Payload)
	}
	if got := <-methods; got != `reboot {"delay":5}` {
		t.Errorf("the handler got %q", got)
	}
	if s := c.Status(); s.State != hub.StateConnected || s.Err != nil {
		t.Errorf("status = %+v", s)
	}
}

// The credential API in both of its 200 body forms, then the renewed
// certificate put to use by a reconnect.
func TestEmulatorIssueCertificate(t *testing.T) {
	for _, form := range []string{"object", "array"} {
		t.Run(form, func(t *testing.T) {
			te := startEmulator(t, func(c *emulator.Config) { c.Certificates.CredentialAPIBody = form })
			const id = "x509-device"
			ident := te.x509Device(t, id)
			c := connect(t, te.options(t, id, hub.Auth{Certificate: ident.get}))
			ctx := testContext(t)

			newKey := newKey(t)
			chain, err := c.IssueCertificate(ctx, newCSR(t, newKey, id))
			if err != nil {
				t.Fatal(err)
			}
			if len(chain) != 3 {
				t.Fatalf("chain of %d certificates, want leaf, issuing CA, root", len(chain))
			}
			leaf, err := x509.ParseCertificate(chain[0])
			if err != nil {
				t.Fatal(err)
			}
			if !leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(newKey.Public()) || leaf.Subject.CommonName != id {
				t.Fatalf("the issued leaf is for %s with another key", leaf.Subject.CommonName)
			}

			// The agent stores the new identity, then reconnects with it.
			ident.set(tlsCert(t, newKey, chain))
			if err := c.Reconnect(ctx); err != nil {
				t.Fatal(err)
			}
			var dev struct {
				Connected   bool `json:"connected"`
				Certificate struct {
					Serial string `json:"serial"`
				} `json:"certificate"`
			}
			te.admin(t, "GET", "/api/devices/"+id, nil, &dev)
			if want := strings.ToUpper(leaf.SerialNumber.Text(16)); !dev.Connected || dev.Certificate.Serial != want {
				t.Errorf("the hub sees %+v, want connected with serial %s", dev, want)
			}
			if _, _, _, _, err := c.GetTwin(ctx); err != nil {
				t.Errorf("the session does not work after the reconnect: %v", err)
			}
		})
	}
}

func TestEmulatorCredentialAPIErrors(t *testing.T) {
	te := startEmulator(t, nil)
	const id = "x509-errors"
	ident := te.x509Device(t, id)
	c := connect(t, te.options(t, id, hub.Auth{Certificate: ident.get}))
	ctx := testContext(t)
	csr := newCSR(t, newKey(t), id)

	for _, tc := range []struct {
		name      string
		fault     *emulator.Fault
		csr       []byte
		status    int
		code      int
		retryable bool
		hint      string
		bad       bool // a malformed answer, not an *Error
	}{
		{name: "throttled", fault: &emulator.Fault{Action: emulator.ActionThrottle, RetryAfter: 7}, status: 429, code: 429002, retryable: true, hint: "retry after 7s"},
		{name: "unavailable", fault: &emulator.Fault{Action: emulator.ActionError, Status: 503}, status: 503, code: 503001, retryable: true, hint: "unavailable"},
		{name: "server error", fault: &emulator.Fault{Action: emulator.ActionError, Status: 500}, status: 500, code: 500001, retryable: true, hint: "internal error"},
		{name: "CSR for another name", csr: newCSR(t, newKey(t), "someone-else"), status: 400, code: 400040, hint: "could not be decoded"},
		{name: "malformed 200", fault: &emulator.Fault{Action: emulator.ActionMalformedJSON}, bad: true},
		{name: "hostile 200", fault: &emulator.Fault{Action: emulator.ActionHostile}, bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.fault != nil {
				f := *tc.fault
				f.Endpoint, f.Device, f.Operation = emulator.EndpointCredentialAPI, id, emulator.OpIssue
				if _, err := te.e.Faults().Add(f); err != nil {
					t.Fatal(err)
				}
			}
			req := csr
			if tc.csr != nil {
				req = tc.csr
			}
			chain, err := c.IssueCertificate(ctx, req)
			if tc.bad {
				if !errors.Is(err, hub.ErrBadAnswer) {
					t.Fatalf("IssueCertificate = %d certificates, %v; want a malformed-answer error", len(chain), err)
				}
				return
			}
			var he *hub.Error
			if !errors.As(err, &he) {
				t.Fatalf("IssueCertificate error = %v, want a *hub.Error", err)
			}
			if he.Status != tc.status || he.Code != tc.code || he.Retryable() != tc.retryable || !strings.Contains(err.Error(), tc.hint) {
				t.Errorf("error %+v (retryable %v): %v; want %d/%d retryable %v mentioning %q", he, he.Retryable(), err, tc.status, tc.code, tc.retryable, tc.hint)
			}
			if tc.status == 429 && he.RetryAfter != 7*time.Second {
				t.Errorf("RetryAfter = %s, want the hub's 7s", he.RetryAfter)
			}
		})
	}
	// The session survives all of that.
	if _, err := c.IssueCertificate(ctx, csr); err != nil {
		t.Fatalf("a good request after the errors: %v", err)
	}
}

// A request abandoned by its caller leaves an operation running in the hub;
// the next request gets 409 and replaces it.
func TestEmulatorIssueCertificateReplacesActiveOperation(t *testing.T) {
	te := startEmulator(t, func(c *emulator.Config) {
		c.Certificates.CredentialAPIDelay = emulator.Duration(1500 * time.Millisecond)
	})
	const id = "x509-conflict"
	ident := te.x509Device(t, id)
	c := connect(t, te.options(t, id, hub.Auth{Certificate: ident.get}))

	// The first caller gives up after the 202, before the certificate.
	short, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := c.IssueCertificate(short, newCSR(t, newKey(t), id)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("abandoned request: %v, want the deadline", err)
	}
	chain, err := c.IssueCertificate(testContext(t), newCSR(t, newKey(t), id))
	if err != nil {
		t.Fatalf("the second request should have replaced the first after a 409: %v", err)
	}
	if len(chain) == 0 {
		t.Fatal("no chain")
	}
}

// A revoked device is disconnected, and the hub refuses it when it comes
// back: the session stops and says the identity was refused.
func TestEmulatorRevokedDevice(t *testing.T) {
	te := startEmulator(t, nil)
	const id = "x509-revoked"
	ident := te.x509Device(t, id)
	log := newConnectionLog()
	opts := te.options(t, id, hub.Auth{Certificate: ident.get})
	opts.OnConnectionChange = log.record
	c := connect(t, opts)
	log.waitFor(t, "connection", func(ev connEvent) bool { return ev.connected })

	if code := te.admin(t, "POST", "/api/devices/"+id+"/revoke", nil, nil); code != 200 {
		t.Fatalf("revoke: HTTP %d", code)
	}
	ev := log.waitFor(t, "refusal", func(ev connEvent) bool { return errors.Is(ev.err, hub.ErrUnauthorized) })
	if ev.connected {
		t.Fatal("connected with a revoked certificate")
	}
	var ce *hub.ConnectError
	if !errors.As(ev.err, &ce) || ce.Retryable() || !strings.Contains(ev.err.Error(), "DPS") {
		t.Errorf("refusal = %v, want a non-retryable ConnectError sending the user to DPS", ev.err)
	}
	waitState(t, c, hub.StateStopped)
	if s := c.Status(); !errors.Is(s.Err, hub.ErrUnauthorized) {
		t.Errorf("status = %+v, want the refusal", s)
	}
	// Operations fail at once instead of waiting for a connection that
	// will not come.
	if _, _, _, _, err := c.GetTwin(testContext(t)); !errors.Is(err, hub.ErrNotConnected) || !errors.Is(err, hub.ErrUnauthorized) {
		t.Errorf("GetTwin on a stopped session = %v", err)
	}
	// A fresh Connect is refused at once, not retried.
	if err := c.Connect(testContext(t)); !errors.Is(err, hub.ErrUnauthorized) {
		t.Errorf("Connect after revocation = %v, want ErrUnauthorized", err)
	}
}

func TestEmulatorUnknownDeviceRefused(t *testing.T) {
	te := startEmulator(t, nil)
	c, err := hub.New(te.options(t, "nobody", hub.Auth{SymmetricKey: []byte("k")}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	err = c.Connect(testContext(t))
	if !errors.Is(err, hub.ErrUnauthorized) || errors.Is(err, hub.ErrNetwork) {
		t.Fatalf("Connect = %v, want ErrUnauthorized", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("a refusal took %s: it must not be retried", time.Since(start))
	}
}

// The hub drops the connection on a message; the session reconnects and the
// message is sent again, so it arrives.
func TestEmulatorReconnectAfterDrop(t *testing.T) {
	te := startEmulator(t, nil)
	const id = "sas-drop"
	key := te.sasDevice(id)
	log := newConnectionLog()
	opts := te.options(t, id, hub.Auth{SymmetricKey: key})
	opts.OnConnectionChange = log.record
	c := connect(t, opts)
	log.waitFor(t, "connection", func(ev connEvent) bool { return ev.connected })

	if _, err := te.e.Faults().Add(emulator.Fault{Endpoint: emulator.EndpointHub, Device: id, Operation: emulator.OpTelemetry, Action: emulator.ActionDrop}); err != nil {
		t.Fatal(err)
	}
	if err := c.SendTelemetry(testContext(t), []byte("after the drop"), nil); err != nil {
		t.Fatal(err)
	}
	log.waitFor(t, "loss", func(ev connEvent) bool { return !ev.connected })
	log.waitFor(t, "reconnection", func(ev connEvent) bool { return ev.connected })
	var msgs []emulator.TelemetryMessage
	te.admin(t, "GET", "/api/devices/"+id+"/telemetry", nil, &msgs)
	if len(msgs) != 1 || msgs[0].Body != "after the drop" {
		t.Errorf("the hub stored %+v, want the message once", msgs)
	}
}

// A connect refused for a while (the hub busy) is retried until it works.
func TestEmulatorConnectRetriesBusyHub(t *testing.T) {
	te := startEmulator(t, nil)
	const id = "sas-busy"
	key := te.sasDevice(id)
	if _, err := te.e.Faults().Add(emulator.Fault{Endpoint: emulator.EndpointHub, Device: id, Operation: emulator.OpConnect, Action: emulator.ActionThrottle, Count: ptr(2)}); err != nil {
		t.Fatal(err)
	}
	log := newConnectionLog()
	opts := te.options(t, id, hub.Auth{SymmetricKey: key})
	opts.OnConnectionChange = log.record
	c := connect(t, opts)
	if s := c.Status(); s.State != hub.StateConnected {
		t.Fatalf("status %+v", s)
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	failures := 0
	for _, ev := range log.events {
		var ce *hub.ConnectError
		if !ev.connected && errors.As(ev.err, &ce) && ce.Code == 3 && ce.Retryable() {
			failures++
		}
	}
	if failures != 2 {
		t.Errorf("saw %d refusals with 'server unavailable', want 2: %+v", failures, log.events)
	}
}

// SAS tokens are renewed by reconnecting at 80% of their lifetime, before
// the hub disconnects the device.
func TestEmulatorSASTokenRefresh(t *testing.T) {
	te := startEmulator(t, nil)
	const id = "sas-refresh"
	key := te.sasDevice(id)
	log := newConnectionLog()
	opts := te.options(t, id, hub.Auth{SymmetricKey: key, TokenLifetime: 2 * time.Second})
	opts.OnConnectionChange = log.record
	c := connect(t, opts)
	log.waitFor(t, "connection", func(ev connEvent) bool { return ev.connected })
	for i := range 2 {
		ev := log.waitFor(t, "refresh", func(ev connEvent) bool { return !ev.connected })
		if !strings.Contains(ev.err.Error(), "fresh SAS token") {
			t.Fatalf("disconnect %d: %v, want a planned token refresh", i, ev.err)
		}
		log.waitFor(t, "reconnection", func(ev connEvent) bool { return ev.connected })
	}
	if err := c.SendTelemetry(testContext(t), []byte("still here"), nil); err != nil {
		t.Fatal(err)
	}
}

// A network failure is distinct from a refusal, and retried.
func TestConnectNetworkFailureIsRetryable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	c, err := hub.New(hub.Options{Host: "myhub.azure-devices.net", Address: addr, DeviceID: "d", Auth: hub.Auth{SymmetricKey: []byte("k")},
		Random: func() float64 { return 0 }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err = c.Connect(ctx)
	var ce *hub.ConnectError
	if !errors.As(err, &ce) || !ce.Retryable() || !errors.Is(err, hub.ErrNetwork) || errors.Is(err, hub.ErrUnauthorized) {
		t.Fatalf("Connect = %v, want a retryable network error", err)
	}
	if s := c.Status(); s.Failures < 2 {
		t.Errorf("status %+v: the failure should have been retried until the deadline", s)
	}
}

func TestEmulatorCloseEndsEverything(t *testing.T) {
	te := startEmulator(t, nil)
	const id = "sas-close"
	key := te.sasDevice(id)
	log := newConnectionLog()
	opts := te.options(t, id, hub.Auth{SymmetricKey: key})
	opts.OnConnectionChange = log.record
	opts.OnMethod = func(ctx context.Context, _ string, _ []byte) (int, []byte) {
		<-ctx.Done() // a slow handler; Close must end it through ctx
		return 500, nil
	}
	c, err := hub.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(testContext(t)); err != nil {
		t.Fatal(err)
	}
	invoked := make(chan struct{})
	go func() {
		defer close(invoked)
		// Ends when the session disconnects; the answer does not matter.
		resp, err := adminClient.Post(te.ep.Admin+"/api/devices/"+id+"/methods/slow", "application/json", strings.NewReader(`{"timeout_seconds":5}`))
		if err == nil {
			resp.Body.Close()
		}
	}()
	defer func() { <-invoked }()
	waitConnectedOnHub(t, te, id, true)

	pending := make(chan error, 1)
	go func() {
		_, _, _, _, err := c.GetTwin(context.Background())
		pending <- err
	}()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
	if s := c.Status(); s.State != hub.StateClosed {
		t.Errorf("status after Close = %+v", s)
	}
	if err := c.SendTelemetry(context.Background(), nil, nil); !errors.Is(err, hub.ErrClosed) {
		t.Errorf("SendTelemetry after Close = %v, want ErrClosed", err)
	}
	if err := <-pending; err != nil && !errors.Is(err, hub.ErrClosed) {
		t.Errorf("an operation running at Close ended with %v, want ErrClosed or success", err)
	}
	waitConnectedOnHub(t, te, id, false)
	// goleak in TestMain checks that nothing of the session is left.
}

func waitConnectedOnHub(t *testing.T, te *testEmulator, id string, want bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var dev struct {
			Connected bool `json:"connected"`
		}
		te.admin(t, "GET", "/api/devices/"+id, nil, &dev)
		if dev.Connected == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("device %s connected = %v, want %v", id, dev.Connected, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitState(t *testing.T, c *hub.Client, want hub.State) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for c.Status().State != want {
		if time.Now().After(deadline) {
			t.Fatalf("state %s, want %s", c.Status().State, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ptr[T any](v T) *T { return &v }

// The hub drops the connection on the credential request: the session
// reconnects and resubmits replacing the lost request; the hub has nothing
// to replace (412), so a fresh request gets the certificate.
func TestEmulatorIssueCertificateAfterDroppedConnection(t *testing.T) {
	te := startEmulator(t, nil)
	const id = "x509-drop"
	ident := te.x509Device(t, id)
	log := newConnectionLog()
	opts := te.options(t, id, hub.Auth{Certificate: ident.get})
	opts.OnConnectionChange = log.record
	c := connect(t, opts)
	if _, err := te.e.Faults().Add(emulator.Fault{Endpoint: emulator.EndpointCredentialAPI, Device: id, Operation: emulator.OpIssue, Action: emulator.ActionDrop}); err != nil {
		t.Fatal(err)
	}
	chain, err := c.IssueCertificate(testContext(t), newCSR(t, newKey(t), id))
	if err != nil || len(chain) != 3 {
		t.Fatalf("IssueCertificate = %d certificates, %v", len(chain), err)
	}
	log.waitFor(t, "loss", func(ev connEvent) bool { return !ev.connected })
}

// Desired changes made while the device was away reach it after the
// reconnect, as the whole desired section; an unchanged twin is not
// delivered again.
func TestEmulatorDesiredResyncAfterReconnect(t *testing.T) {
	te := startEmulator(t, nil)
	const id = "sas-resync"
	key := te.sasDevice(id)
	type update struct {
		patch   map[string]any
		version int
	}
	updates := make(chan update, 8)
	opts := te.options(t, id, hub.Auth{SymmetricKey: key})
	opts.OnDesired = func(p map[string]any, v int) { updates <- update{p, v} }
	c := connect(t, opts)
	next := func() update {
		t.Helper()
		select {
		case u := <-updates:
			return u
		case <-time.After(10 * time.Second):
			t.Fatal("no desired update")
			return update{}
		}
	}
	if u := next(); u.version != 1 {
		t.Fatalf("first update %+v, want the section at version 1", u)
	}
	te.admin(t, "PATCH", "/api/devices/"+id+"/twin/desired", map[string]any{"a": 1}, nil)
	if u := next(); u.version != 2 {
		t.Fatalf("second update %+v, want the patch at version 2", u)
	}

	// The next CONNACK is held back for a second, and the twin changes
	// meanwhile.
	if _, err := te.e.Faults().Add(emulator.Fault{Endpoint: emulator.EndpointHub, Device: id, Operation: emulator.OpConnect, Action: emulator.ActionDelay, Delay: emulator.Duration(time.Second)}); err != nil {
		t.Fatal(err)
	}
	reconnected := make(chan error, 1)
	go func() { reconnected <- c.Reconnect(context.Background()) }()
	waitConnectedOnHub(t, te, id, false)
	te.admin(t, "PATCH", "/api/devices/"+id+"/twin/desired", map[string]any{"b": 2}, nil)
	if err := <-reconnected; err != nil {
		t.Fatal(err)
	}
	if u := next(); u.version != 3 || u.patch["a"] != 1.0 || u.patch["b"] != 2.0 {
		t.Fatalf("after the reconnect: %+v, want the whole section {a:1, b:2} at version 3", u)
	}

	if err := c.Reconnect(testContext(t)); err != nil {
		t.Fatal(err)
	}
	if _, _, _, _, err := c.GetTwin(testContext(t)); err != nil { // the resync's GET has been answered by now
		t.Fatal(err)
	}
	select {
	case u := <-updates:
		t.Fatalf("unchanged twin delivered again: %+v", u)
	case <-time.After(300 * time.Millisecond):
	}
}

// Twin requests under the hub's faults: errors come back typed, a dropped
// connection is survived by asking again, malformed answers are refused.
func TestEmulatorTwinFaults(t *testing.T) {
	te := startEmulator(t, nil)
	const id = "sas-twin-faults"
	key := te.sasDevice(id)
	c := connect(t, te.options(t, id, hub.Auth{SymmetricKey: key}))
	for _, tc := range []struct {
		fault     emulator.Fault
		status    int
		retryable bool
		bad       bool
		ok        bool
	}{
		{fault: emulator.Fault{Action: emulator.ActionThrottle, RetryAfter: 3}, status: 429, retryable: true},
		{fault: emulator.Fault{Action: emulator.ActionError, Status: 503}, status: 503, retryable: true},
		{fault: emulator.Fault{Action: emulator.ActionMalformedJSON}, bad: true},
		{fault: emulator.Fault{Action: emulator.ActionHostile}, bad: true},
		{fault: emulator.Fault{Action: emulator.ActionDrop}, ok: true},
		{fault: emulator.Fault{Action: emulator.ActionDelay, Delay: emulator.Duration(300 * time.Millisecond)}, ok: true},
	} {
		t.Run(tc.fault.Action, func(t *testing.T) {
			f := tc.fault
			f.Endpoint, f.Device, f.Operation = emulator.EndpointHub, id, emulator.OpTwin
			if _, err := te.e.Faults().Add(f); err != nil {
				t.Fatal(err)
			}
			_, _, _, _, err := c.GetTwin(testContext(t))
			var he *hub.Error
			switch {
			case tc.ok:
				if err != nil {
					t.Fatalf("GetTwin = %v, want success", err)
				}
			case tc.bad:
				if !errors.Is(err, hub.ErrBadAnswer) {
					t.Fatalf("GetTwin = %v, want a malformed-answer error", err)
				}
			case !errors.As(err, &he) || he.Status != tc.status || he.Retryable() != tc.retryable:
				t.Fatalf("GetTwin = %v, want a *hub.Error %d", err, tc.status)
			}
		})
	}
	if v, err := c.UpdateReported(testContext(t), map[string]any{"ok": true}); err != nil || v < 2 {
		t.Fatalf("UpdateReported after the faults = %d, %v", v, err)
	}
}
