package agent

import (
	"context"
	"errors"
	"strings"

	"github.com/dpsagent/dpsagent/tpm/softkey"
	"testing"
	"time"

	"github.com/dpsagent/dpsagent/agent/store"
)

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (h *harness) issuedByHub() int {
	h.hub.mu.Lock()
	defer h.hub.mu.Unlock()
	return h.hub.issued
}

func (h *harness) manifest(t *testing.T) *store.Manifest {
	t.Helper()
	st, err := store.Open(h.dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m, err := st.Load()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// With time moving on, the agent renews again and again through the hub's
// credential API, each time with a new key, and switches to each new identity.
func TestRenewsThroughTheHubWithANewKeyEachTime(t *testing.T) {
	h := newHarness(t)
	h.clock.travel = true
	a, stop := h.run(t)
	waitFor(t, "three renewals", func() bool { return h.issuedByHub() >= 3 })
	waitFor(t, "the switch to the third renewed identity", func() bool {
		lr := a.Status().LastRenewal
		return lr != nil && lr.Result == "success" && len(h.hub.targetsCopy()) >= 4
	})
	stop()

	targets := h.hub.targetsCopy()
	seenKeys := map[string]bool{}
	for _, tg := range targets {
		c, _ := tg.Certificate()
		seenKeys[string(c.Leaf.RawSubjectPublicKeyInfo)] = true
	}
	if len(seenKeys) < 4 {
		t.Errorf("%d distinct keys over %d connections; every renewal must rotate the key", len(seenKeys), len(targets))
	}
	if n := h.dps.registrations(); n != 1 {
		t.Errorf("%d DPS registrations; renewals should have used the hub", n)
	}
	m := h.manifest(t)
	if m.Next != nil || m.Current == nil || m.Current.Path != store.PathHub {
		t.Errorf("manifest after renewals: current %+v, next %+v", m.Current, m.Next)
	}
	if lr := a.Status().LastRenewal; lr == nil || lr.Path != "hub" {
		t.Errorf("last renewal = %+v", lr)
	}
}

func (h *fakeHub) targetsCopy() []HubTarget {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]HubTarget(nil), h.targets...)
}

// When the credential API refuses, the agent renews through DPS.
func TestRenewalFallsBackToDPS(t *testing.T) {
	h := newHarness(t)
	h.clock.travel = true
	h.hub.issueErr = refusal{retry: false}
	a, stop := h.run(t)
	waitFor(t, "a renewal through DPS", func() bool {
		lr := a.Status().LastRenewal
		return lr != nil && lr.Result == "success" && lr.Path == "dps"
	})
	stop()
	if n := h.dps.registrations(); n < 2 {
		t.Errorf("%d DPS registrations, want the first and at least one renewal", n)
	}
}

// If the hub refuses the renewed identity, the agent goes back to the current
// one, discards the staged identity and retries later.
func TestRefusedRenewalKeepsTheCurrentIdentity(t *testing.T) {
	h := newHarness(t)
	_, stop := h.run(t)
	first, _ := h.waitConnected(t).Certificate()
	stop()

	h.clock.mu.Lock()
	h.clock.now = h.clock.now.Add(50 * time.Minute) // past 80% of the hour
	h.clock.mu.Unlock()
	h.hub.mu.Lock()
	h.hub.refuseAllBut = first.Leaf.SerialNumber.Text(16)
	h.hub.mu.Unlock()
	a, stop := h.run(t)
	waitFor(t, "a failed renewal", func() bool {
		lr := a.Status().LastRenewal
		return lr != nil && lr.Result == "failure"
	})
	waitFor(t, "the reconnection with the current identity", func() bool { return a.Status().Connected })
	stop()
	m := h.manifest(t)
	if m.Next != nil || m.Current.Serial != first.Leaf.SerialNumber.Text(16) {
		t.Errorf("after a refused switch: current %s, next %+v; want the first identity and nothing staged", m.Current.Serial, m.Next)
	}
	if m.LastError == nil || m.LastError.Message == "" {
		t.Error("the refused renewal was not recorded for the status screen")
	}
}

// Renew starts a renewal at once, before it is due.
func TestRenewNow(t *testing.T) {
	h := newHarness(t)
	a, stop := h.run(t)
	h.waitConnected(t)
	a.Renew()
	waitFor(t, "the requested renewal", func() bool { return h.issuedByHub() == 1 })
	stop()
}

// The after-renewal hook sees the new identity's facts once it is in use.
func TestAfterRenewalHook(t *testing.T) {
	h := newHarness(t)
	got := make(chan Renewed, 1)
	st, err := store.Open(h.dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a, err := New(Options{
		Config: Config{IDScope: "0ne00000001", RegistrationID: "gw-1", KeyAlgorithm: "ecdsa-p256"},
		Keys:   &softkey.Backend{}, Store: st, Registrar: h.dps, Hub: h.hub, Clock: h.clock,
		AfterRenewal: func(_ context.Context, r Renewed) error {
			select {
			case got <- r:
			default:
			}
			return errors.New("a failing hook must not undo the renewal")
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	h.waitConnected(t)
	a.Renew()
	var r Renewed
	select {
	case r = <-got:
	case <-time.After(20 * time.Second):
		t.Fatal("the hook did not run")
	}
	cancel()
	<-done
	if r.Serial == "" || r.Path != "hub" || r.DeviceID != "gw-1" || !strings.Contains(string(r.ChainPEM), "BEGIN CERTIFICATE") {
		t.Errorf("hook saw %+v", r)
	}
	if cur := a.Status().Certificate; cur == nil || cur.Serial != r.Serial {
		t.Errorf("status certificate %+v, want the renewed serial %s", cur, r.Serial)
	}
}

// A gateway switched off past its certificate's expiry comes back through DPS
// with the onboarding credential, with a new key.
func TestRecoversAfterTheCertificateExpired(t *testing.T) {
	h := newHarness(t)
	_, stop := h.run(t)
	first, _ := h.waitConnected(t).Certificate()
	stop()
	h.clock.mu.Lock()
	h.clock.now = first.Leaf.NotAfter.Add(time.Hour)
	h.clock.mu.Unlock()
	a, stop := h.run(t)
	second, _ := h.waitConnected(t).Certificate()
	stop()
	if n := h.dps.registrations(); n != 2 {
		t.Errorf("%d registrations, want 2 (the expired certificate renewed through DPS)", n)
	}
	if string(second.Leaf.RawSubjectPublicKeyInfo) == string(first.Leaf.RawSubjectPublicKeyInfo) {
		t.Error("the expired identity's key was reused")
	}
	if !second.Leaf.NotAfter.After(h.clock.Now()) {
		t.Errorf("connected with a certificate valid until %s at %s", second.Leaf.NotAfter, h.clock.Now())
	}
	if st := a.Status(); st.Certificate == nil || st.Certificate.Serial != second.Leaf.SerialNumber.Text(16) {
		t.Errorf("status = %+v", st.Certificate)
	}
}
