package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/dpsagent/dpsagent/agent"
	"github.com/dpsagent/dpsagent/agent/renewal"
	"github.com/dpsagent/dpsagent/agent/store"
	emu "github.com/dpsagent/dpsagent/emulator"
	"github.com/dpsagent/dpsagent/tpm/softkey"
)

// Fleet spread (issue 5, "Proof"): 200 agents in one process, software keys,
// one in-process emulator, certificates of 60 s issued together, renewal at
// 80% with 25% jitter. Their renewal requests must reach the hub spread over
// the 15 s jitter window, not in one burst.
const (
	fleetSize     = 200
	fleetLifetime = 60 * time.Second
	fleetGroupKey = "ZmxlZXQtc3ByZWFkLWdyb3VwLWtleS0wMTIzNDU2Nzg=" // base64, any 32 bytes
)

// fleetMaxShare is the most of the fleet one second may carry. A fair
// spread puts 200 × 1/15 ≈ 13 requests in each second of the 15 s window;
// the busiest of 15 seconds then holds about 20 (10% of the fleet) by chance
// alone, more than 26 about once in 200 runs, and more than 30 (15%) about
// once in 20,000. A fleet renewing in one burst puts it all in one or two.
const fleetMaxShare = 0.15

func TestFleetRenewalSpread(t *testing.T) {
	if testing.Short() {
		t.Skip("runs 200 agents through a renewal, over a minute; skipped with -short")
	}
	ep := fleetEmulator(t)
	keyFile := filepath.Join(t.TempDir(), "group.key")
	if err := os.WriteFile(keyFile, []byte(fleetGroupKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	policy, err := renewal.ParsePolicy("80%", "25%")
	if err != nil {
		t.Fatal(err)
	}
	requests := &fleetRequests{at: map[string][]time.Time{}}
	agents := make([]*agent.Agent, fleetSize)
	for i := range agents {
		agents[i] = fleetAgent(t, ep, keyFile, fmt.Sprintf("fleet-%03d", i), policy, requests)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() }) // before the stores close and the emulator stops
	for _, a := range agents {
		wg.Go(func() {
			if err := a.Run(ctx); err != nil {
				t.Errorf("agent.Run: %v", err)
			}
		})
	}

	issued, serials := fleetWaitProvisioned(t, agents)
	first, last := slices.MinFunc(issued, time.Time.Compare), slices.MaxFunc(issued, time.Time.Compare)
	t.Logf("%d certificates issued from %s to %s (NotBefore spread %s)", fleetSize, first.Format(time.TimeOnly), last.Format(time.TimeOnly), last.Sub(first))
	// Issued within a second or two (NotBefore has whole seconds): even
	// then, a fleet without jitter would put far more than fleetMaxShare in
	// one second.
	if last.Sub(first) > 3*time.Second {
		t.Fatalf("the certificates were issued over %s, not together: the spread below would measure the provisioning, not the jitter", last.Sub(first))
	}

	threshold := fleetLifetime * 8 / 10
	window := fleetLifetime / 4
	// Renewal falls in (NotBefore+threshold-window, NotBefore+threshold]; a
	// check fires at that moment, so a loaded machine adds little.
	deadline := last.Add(threshold + 20*time.Second)
	for {
		if n := requests.agents(); n == fleetSize {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("%d of %d agents asked the hub for a renewal by %s", n, fleetSize, deadline.Format(time.TimeOnly))
		}
		time.Sleep(200 * time.Millisecond)
	}

	perSecond := map[int64]int{}
	for i := range agents {
		id := fmt.Sprintf("fleet-%03d", i)
		at := requests.first(id)
		since := at.Sub(issued[i])
		if since <= threshold-window-time.Second || since > threshold+5*time.Second {
			t.Errorf("%s asked for its renewal %s after its certificate's NotBefore, outside the window (%s, %s]", id, since.Round(time.Millisecond), threshold-window, threshold)
		}
		perSecond[at.Unix()]++
	}
	mean := float64(fleetSize) / window.Seconds()
	peak, peakAt := 0, int64(0)
	for sec, n := range perSecond {
		if n > peak {
			peak, peakAt = n, sec
		}
	}
	t.Logf("renewal requests: %d over %d distinct seconds; peak %d in the second from %s, mean %.1f/s over the %s jitter window: peak/mean %.2f",
		fleetSize, len(perSecond), peak, time.Unix(peakAt, 0).Format(time.TimeOnly), mean, window, float64(peak)/mean)
	t.Logf("requests per second: %s", fleetHistogram(perSecond))
	if float64(peak) > 4*mean {
		t.Errorf("peak %d requests in one second is more than 4× the mean %.1f", peak, mean)
	}
	if float64(peak) > fleetMaxShare*fleetSize {
		t.Errorf("%d of %d agents asked in the same second, more than %.0f%% of the fleet", peak, fleetSize, fleetMaxShare*100)
	}

	// And the renewals went through: every agent connected with a new certificate.
	deadline = time.Now().Add(30 * time.Second)
	for {
		var behind []string
		for i, a := range agents {
			if s := a.Status(); !s.Connected || s.Certificate == nil || s.Certificate.Serial == serials[i] {
				behind = append(behind, fmt.Sprintf("fleet-%03d (%s)", i, s.State))
			}
		}
		if len(behind) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d agents are not connected with a renewed certificate: %s", len(behind), strings.Join(behind[:min(len(behind), 10)], ", "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// fleetEmulator starts an in-process emulator: one hub, a symmetric-key
// enrollment group, certificates of fleetLifetime.
func fleetEmulator(t *testing.T) *emu.Endpoints {
	t.Helper()
	e, err := emu.New(emu.Config{
		DPS:   emu.ListenerConfig{Listen: "127.0.0.1:0"},
		Hubs:  []emu.HubConfig{{Name: "hub1", Host: "127.0.0.1", Listen: "127.0.0.1:0"}},
		Admin: emu.ListenerConfig{Listen: "127.0.0.1:0"},
		Certificates: emu.CertificatesConfig{
			Lifetime:           emu.Duration(fleetLifetime),
			CredentialAPIDelay: emu.Duration(time.Second),
		},
		Enrollments: []emu.Enrollment{{
			GroupID:     "fleet",
			Attestation: emu.Attestation{Type: emu.AttestSymmetricKey, PrimaryKey: fleetGroupKey},
		}},
	}, t.TempDir(), emu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ep, err := e.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return ep
}

// fleetAgent wires one agent as the daemon does (wire.go: the DPS registrar
// and the hub connector), with a software key, its own state directory, and
// the hub connector wrapped to record credential requests.
func fleetAgent(t *testing.T, ep *emu.Endpoints, keyFile, regID string, policy renewal.Policy, requests *fleetRequests) *agent.Agent {
	t.Helper()
	dir := t.TempDir()
	_, port, err := net.SplitHostPort(ep.Hubs["hub1"].Address)
	if err != nil {
		t.Fatal(err)
	}
	hubPort, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &Config{
		IDScope: ep.IDScope, RegistrationID: regID, Identity: IdentityX509,
		Onboarding: Onboarding{Method: OnboardSymmetricKey, SymmetricKeyFile: keyFile, GroupKey: true},
		Advanced: Advanced{
			DPSEndpoint: ep.DPS, TrustBundleFile: ep.TLSCAFile, TPM: "none", KeyAlgorithm: "auto",
			StateDir: filepath.Join(dir, "state"), HubPort: hubPort,
		},
	}
	log := zap.NewNop()
	keys := &softkey.Backend{}
	reg, err := newRegistrar(cfg, keys, log)
	if err != nil {
		t.Fatal(err)
	}
	hub, err := newHubConnector(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(cfg.Advanced.StateDir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	a, err := agent.New(agent.Options{
		Config:    agent.Config{IDScope: cfg.IDScope, RegistrationID: regID, Renewal: policy},
		Keys:      keys,
		Store:     st,
		Registrar: reg,
		Hub:       fleetHub{HubConnector: hub, id: regID, requests: requests},
		Logger:    log,
		Version:   "fleet-test",
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// fleetWaitProvisioned waits until every agent is connected with an issued
// certificate and returns their NotBefore times and serials.
func fleetWaitProvisioned(t *testing.T, agents []*agent.Agent) ([]time.Time, []string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var (
			notBefore []time.Time
			serials   []string
		)
		for _, a := range agents {
			if s := a.Status(); s.Connected && s.Certificate != nil {
				notBefore = append(notBefore, s.Certificate.NotBefore)
				serials = append(serials, s.Certificate.Serial)
			}
		}
		if len(notBefore) == len(agents) {
			return notBefore, serials
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d agents connected with a certificate within 2 minutes", len(notBefore), len(agents))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// fleetRequests records when each agent's credential requests left for the
// hub.
type fleetRequests struct {
	mu sync.Mutex
	at map[string][]time.Time
}

func (r *fleetRequests) add(id string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.at[id] = append(r.at[id], at)
}

func (r *fleetRequests) agents() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.at)
}

func (r *fleetRequests) first(id string) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.at[id][0]
}

// fleetHub is the real hub connector, its sessions' IssueCertificate timed.
type fleetHub struct {
	agent.HubConnector
	id       string
	requests *fleetRequests
}

func (h fleetHub) Connect(ctx context.Context, target agent.HubTarget) (agent.HubSession, error) {
	s, err := h.HubConnector.Connect(ctx, target)
	if err != nil {
		return nil, err
	}
	return fleetSession{HubSession: s, hub: h}, nil
}

type fleetSession struct {
	agent.HubSession
	hub fleetHub
}

func (s fleetSession) IssueCertificate(ctx context.Context, csr []byte) ([][]byte, error) {
	s.hub.requests.add(s.hub.id, time.Now())
	return s.HubSession.IssueCertificate(ctx, csr)
}

// fleetHistogram is the requests per second, in order: "12 15 9 ...".
func fleetHistogram(perSecond map[int64]int) string {
	secs := make([]int64, 0, len(perSecond))
	for s := range perSecond {
		secs = append(secs, s)
	}
	slices.Sort(secs)
	var b strings.Builder
	for s := secs[0]; s <= secs[len(secs)-1]; s++ {
		fmt.Fprintf(&b, "%d ", perSecond[s])
	}
	return strings.TrimSpace(b.String())
}
