package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/dpsagent/dpsagent/agent/store"
	"github.com/dpsagent/dpsagent/tpm/keys"
	"github.com/dpsagent/dpsagent/tpm/softkey"
)

// fakeClock never sleeps: After fires at once and records the wait asked for;
// with travel set, it also moves the clock forward by the wait, so schedules
// play out instantly.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	waits  []time.Duration
	travel bool
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	c.waits = append(c.waits, d)
	if c.travel {
		c.now = c.now.Add(d)
	}
	c.mu.Unlock()
	ch := make(chan time.Time, 1)
	ch <- c.Now()
	return ch
}

// fakeDPS issues certificates from a test CA, or fails as told.
type fakeDPS struct {
	t     *testing.T
	root  *testCA
	clock *fakeClock
	mu    sync.Mutex
	calls int
	fail  []error                                     // returned by the next calls, in order
	tweak func(csr *x509.CertificateRequest) [][]byte // replaces the answer when set
}

func (d *fakeDPS) Register(_ context.Context, der []byte) (*Registration, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls++
	if len(d.fail) > 0 {
		err := d.fail[0]
		d.fail = d.fail[1:]
		return nil, err
	}
	if der == nil { // sas mode: no certificate asked for
		return &Registration{OperationID: "op", Status: "assigned", AssignedHub: "hub.example", DeviceID: "gw-1"}, nil
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, err
	}
	chain := [][]byte{d.root.issueAt(d.t, d.clock.Now(), csr.PublicKey, csr.Subject.CommonName), d.root.cert.Raw}
	if d.tweak != nil {
		chain = d.tweak(csr)
	}
	return &Registration{OperationID: "op", Status: "assigned", Substatus: "initialAssignment", AssignedHub: "hub.example", DeviceID: csr.Subject.CommonName, Chain: chain}, nil
}

func (d *fakeDPS) registrations() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.calls
}

// fakeHub records sessions and reported properties; it can refuse identities.
type fakeHub struct {
	t            *testing.T
	root         *testCA
	clock        *fakeClock
	issueErr     error  // the credential API's answer when set
	refuseAllBut string // when set, only this serial may connect
	issued       int
	mu           sync.Mutex
	targets      []HubTarget
	reported     []map[string]any
	refuse       map[string]bool // by certificate serial
	connected    chan HubTarget
	// The device twin: desired is the solution's, twin the reported
	// section the agent's patches build up; twinErr fails GetTwin.
	desired map[string]any
	twin    map[string]any
	twinErr error
}

func newFakeHub(t *testing.T, root *testCA, clock *fakeClock) *fakeHub {
	return &fakeHub{t: t, root: root, clock: clock, refuse: map[string]bool{}, connected: make(chan HubTarget, 64),
		desired: map[string]any{}, twin: map[string]any{}}
}

func (h *fakeHub) Connect(_ context.Context, target HubTarget) (HubSession, error) {
	if target.Certificate == nil { // sas mode
		h.mu.Lock()
		defer h.mu.Unlock()
		h.targets = append(h.targets, target)
		h.connected <- target
		return &fakeSession{h: h}, nil
	}
	cert, err := target.Certificate()
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	serial := cert.Leaf.SerialNumber.Text(16)
	if h.refuse[serial] || (h.refuseAllBut != "" && serial != h.refuseAllBut) {
		return nil, ErrHubUnauthorized
	}
	h.targets = append(h.targets, target)
	select {
	case h.connected <- target:
	default:
	}
	return &fakeSession{h: h}, nil
}

type fakeSession struct{ h *fakeHub }

func (s *fakeSession) UpdateReported(_ context.Context, patch map[string]any) (int, error) {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	s.h.reported = append(s.h.reported, patch)
	mergePatch(s.h.twin, patch)
	return len(s.h.reported) + 1, nil
}

// mergePatch applies a twin patch as IoT Hub does: maps merge, null deletes.
func mergePatch(dst, patch map[string]any) {
	for k, v := range patch {
		switch v := v.(type) {
		case nil:
			delete(dst, k)
		case map[string]any:
			sub, ok := dst[k].(map[string]any)
			if !ok {
				sub = map[string]any{}
				dst[k] = sub
			}
			mergePatch(sub, v)
		default:
			dst[k] = v
		}
	}
}

func (s *fakeSession) GetTwin(context.Context) (desired, reported map[string]any, dv, rv int, err error) {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	if s.h.twinErr != nil {
		return nil, nil, 0, 0, s.h.twinErr
	}
	desired, reported = map[string]any{}, map[string]any{}
	mergePatch(desired, s.h.desired)
	mergePatch(reported, s.h.twin)
	return desired, reported, 1, len(s.h.reported) + 1, nil
}
func (s *fakeSession) IssueCertificate(_ context.Context, der []byte) ([][]byte, error) {
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	if s.h.issueErr != nil {
		return nil, s.h.issueErr
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, err
	}
	s.h.issued++
	return [][]byte{s.h.root.issueAt(s.h.t, s.h.clock.Now(), csr.PublicKey, csr.Subject.CommonName), s.h.root.cert.Raw}, nil
}
func (s *fakeSession) Close() error { return nil }

type harness struct {
	dir   string
	dps   *fakeDPS
	hub   *fakeHub
	clock *fakeClock
}

func newHarness(t *testing.T) *harness {
	clock := &fakeClock{now: time.Now()}
	root := newCA(t, "root", nil)
	return &harness{
		dir: filepath.Join(t.TempDir(), "state"), dps: &fakeDPS{t: t, root: root, clock: clock},
		hub: newFakeHub(t, root, clock), clock: clock,
	}
}

// run starts an agent over the harness's state directory and returns a stop
// function that waits for Run to end.
func (h *harness) run(t *testing.T) (*Agent, func()) {
	t.Helper()
	return h.runWith(t, Config{IDScope: "0ne00000001", RegistrationID: "gw-1", KeyAlgorithm: keys.ECDSAP256})
}

func (h *harness) runWith(t *testing.T, cfg Config) (*Agent, func()) {
	t.Helper()
	st, err := store.Open(h.dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Options{
		Config: cfg,
		Keys:   &softkey.Backend{}, Store: st, Registrar: h.dps, Hub: h.hub, Clock: h.clock, Version: "test",
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	return a, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		st.Close()
	}
}

func (h *harness) waitConnected(t *testing.T) HubTarget {
	t.Helper()
	select {
	case target := <-h.hub.connected:
		return target
	case <-time.After(10 * time.Second):
		t.Fatal("the agent did not connect to the hub")
	}
	return HubTarget{}
}

func TestProvisionConnectAndReport(t *testing.T) {
	h := newHarness(t)
	a, stop := h.run(t)
	target := h.waitConnected(t)
	stop()
	if target.Host != "hub.example" || target.DeviceID != "gw-1" {
		t.Errorf("connected to %+v", target)
	}
	cert, _ := target.Certificate()
	if cert.Leaf.Subject.CommonName != "gw-1" || len(cert.Certificate) != 2 {
		t.Errorf("presented %v with a chain of %d", cert.Leaf.Subject, len(cert.Certificate))
	}
	st := a.Status()
	if st.State != StateConnected || st.Certificate == nil || st.Certificate.KeyStorage != "file" || st.DeviceID != "gw-1" {
		t.Errorf("status = %+v", st)
	}
	h.hub.mu.Lock()
	defer h.hub.mu.Unlock()
	if len(h.hub.reported) == 0 {
		t.Fatal("no reported properties")
	}
	c := h.hub.reported[0]["certificate"].(map[string]any)
	if c["serialNumber"] != cert.Leaf.SerialNumber.Text(16) || c["keyAlgorithm"] != "ecdsa-p256" || c["validUntil"] == "" {
		t.Errorf("reported certificate = %v", c)
	}
}

func TestRestartDoesNotRegisterAgain(t *testing.T) {
	h := newHarness(t)
	_, stop := h.run(t)
	first, _ := h.waitConnected(t).Certificate()
	stop()
	_, stop = h.run(t)
	second, _ := h.waitConnected(t).Certificate()
	stop()
	if n := h.dps.registrations(); n != 1 {
		t.Errorf("%d registrations for two starts, want 1", n)
	}
	if !first.Leaf.Equal(second.Leaf) {
		t.Error("the restart presented another certificate")
	}
}

// Bad answers are never stored, the agent keeps trying, and succeeds once the
// service answers correctly.
func TestBadChainsAreNotStored(t *testing.T) {
	h := newHarness(t)
	other := newCA(t, "other", nil)
	bad := 0
	h.dps.tweak = func(csr *x509.CertificateRequest) [][]byte {
		bad++
		switch bad {
		case 1: // a chain for the right name that does not reach its root
			return [][]byte{other.issue(t, csr.PublicKey, "gw-1"), h.dps.root.cert.Raw}
		case 2: // the wrong name
			return [][]byte{h.dps.root.issue(t, csr.PublicKey, "gw-2"), h.dps.root.cert.Raw}
		}
		h.dps.tweak = nil
		return [][]byte{h.dps.root.issue(t, csr.PublicKey, "gw-1"), h.dps.root.cert.Raw}
	}
	_, stop := h.run(t)
	h.waitConnected(t)
	stop()
	if n := h.dps.registrations(); n != 3 {
		t.Errorf("%d registrations, want 3 (two rejected answers, one good)", n)
	}
	// Only the committed identity's key and chain remain.
	entries, _ := os.ReadDir(h.dir)
	blobs := 0
	for _, e := range entries {
		if name := e.Name(); len(name) > 4 && (name[:4] == "key-" || name[:6] == "chain-") {
			blobs++
		}
	}
	if blobs != 2 {
		t.Errorf("%d key/chain files in the state directory, want 2", blobs)
	}
}

type refusal struct{ retry bool }

func (r refusal) Error() string           { return "refused" }
func (r refusal) Retryable() bool         { return r.retry }
func (r refusal) Hint() string            { return "fix the enrollment" }
func (refusal) RetryAfter() time.Duration { return 0 }

func TestRefusalsBackOffSlowly(t *testing.T) {
	h := newHarness(t)
	h.dps.fail = []error{refusal{retry: false}, refusal{retry: true}}
	_, stop := h.run(t)
	h.waitConnected(t)
	stop()
	h.clock.mu.Lock()
	defer h.clock.mu.Unlock()
	if len(h.clock.waits) < 2 {
		t.Fatalf("waits = %v", h.clock.waits)
	}
	if w := h.clock.waits[0]; w < refusedMin || w > 2*refusedMin {
		t.Errorf("after a refusal the agent waited %s, want between %s and %s", w, refusedMin, 2*refusedMin)
	}
	if w := h.clock.waits[1]; w < retryMin || w > 4*retryMin {
		t.Errorf("after a transient failure the agent waited %s, want between %s and %s", w, retryMin, 4*retryMin)
	}
}

// When the hub refuses the identity (revoked, moved), the agent registers
// again with DPS and connects with the new identity.
func TestHubRefusalLeadsBackToDPS(t *testing.T) {
	h := newHarness(t)
	_, stop := h.run(t)
	first, _ := h.waitConnected(t).Certificate()
	stop()
	h.hub.mu.Lock()
	h.hub.refuse[first.Leaf.SerialNumber.Text(16)] = true
	h.hub.mu.Unlock()
	_, stop = h.run(t)
	second, _ := h.waitConnected(t).Certificate()
	stop()
	if n := h.dps.registrations(); n != 2 {
		t.Errorf("%d registrations, want 2", n)
	}
	if first.Leaf.Equal(second.Leaf) {
		t.Error("reconnected with the refused certificate")
	}
	var _ tls.Certificate = *second
}

// The legacy sas mode registers without a CSR, connects with the symmetric
// key (no certificate), and reports that it has no certificate. Switching the
// configuration to x509 later provisions a certificate.
func TestSASModeAndTheWayOut(t *testing.T) {
	h := newHarness(t)
	sasCfg := Config{IDScope: "0ne00000001", RegistrationID: "gw-1", SAS: true}
	a, stop := h.runWith(t, sasCfg)
	target := h.waitConnected(t)
	stop()
	if target.Certificate != nil || a.Status().Certificate != nil {
		t.Fatal("sas mode presented a certificate")
	}
	h.hub.mu.Lock()
	rep := h.hub.reported[0]
	h.hub.mu.Unlock()
	if rep["certificate"] != nil || rep["dpsAgent"].(map[string]any)["identity"] != "sas" {
		t.Errorf("reported in sas mode: %v", rep)
	}
	_, stop = h.runWith(t, sasCfg)
	h.waitConnected(t)
	stop()
	if n := h.dps.registrations(); n != 1 {
		t.Fatalf("%d registrations for two sas starts, want 1", n)
	}
	_, stop = h.run(t) // now x509
	target = h.waitConnected(t)
	stop()
	if target.Certificate == nil {
		t.Fatal("after switching to x509 the agent still connects without a certificate")
	}
	if m := h.manifest(t); m.Current.KeyStorage != store.StorageFile {
		t.Errorf("stored identity after the switch: %+v", m.Current)
	}
}

// A hub that refuses every fresh identity must not make the agent register
// with DPS in a tight loop.
func TestRepeatedHubRefusalsBackOff(t *testing.T) {
	h := newHarness(t)
	h.hub.mu.Lock()
	h.hub.refuseAllBut = "none-matches"
	h.hub.mu.Unlock()
	_, stop := h.run(t)
	waitFor(t, "four registrations", func() bool { return h.dps.registrations() >= 4 })
	stop()
	h.clock.mu.Lock()
	defer h.clock.mu.Unlock()
	long := 0
	for _, w := range h.clock.waits {
		if w >= refusedMin {
			long++
		}
	}
	if long < 2 {
		t.Errorf("waits between refused identities: %v; want back-off of at least %s after the second refusal", h.clock.waits, refusedMin)
	}
}
