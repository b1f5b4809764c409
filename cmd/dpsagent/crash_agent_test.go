package main

import (
	"bufio"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dpsagent/dpsagent/tpm/keys/keytest"
	"github.com/dpsagent/dpsagent/tpm/tpmtest"
)

// The crash tests run dpsagent built with -tags killpoints (killpoints_on.go)
// against one iotemu, each worker with its own swtpm. Runs happen on worker
// goroutines, so everything here returns errors instead of failing the test.

// crashLimit bounds every wait of a crash run: a registration takes about 4 s
// (the service's retry-after of 3 s), so this is only reached when stuck.
const crashLimit = 60 * time.Second

var crashBuilt struct {
	once sync.Once
	bin  string
	err  error
}

// crashBinaries returns iotemu and a dpsagent with kill points (static, as
// shipped otherwise), built once per test binary run; skipped with -short.
func crashBinaries(t *testing.T) binaries {
	t.Helper()
	bins := buildBinaries(t)
	goTool := keytest.RequireTool(t, "go", "golang-go")
	crashBuilt.once.Do(func() {
		// Beside the e2e binaries, so TestMain removes it with them.
		out := filepath.Join(filepath.Dir(bins.iotemu), "dpsagent-killpoints")
		cmd := exec.Command(goTool, "build", "-tags", "killpoints", "-trimpath", "-o", out, "github.com/dpsagent/dpsagent/cmd/dpsagent")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if msg, err := cmd.CombinedOutput(); err != nil {
			crashBuilt.err = fmt.Errorf("go build -tags killpoints: %w\n%s", err, msg)
			return
		}
		crashBuilt.bin = out
	})
	if crashBuilt.err != nil {
		t.Fatal(crashBuilt.err)
	}
	return binaries{dpsagent: crashBuilt.bin, iotemu: bins.iotemu}
}

// crashLab is what every crash run shares: the binaries, one emulator and
// the device PKI's root, and the tally.
type crashLab struct {
	bins       binaries
	emu        *emulator
	hubPort    int
	onboarding string // a group key: one enrollment serves every worker
	roots      *x509.CertPool
	lifetime   time.Duration
	http       *http.Client
	tally      *crashTally
}

func crashNewLab(t *testing.T, lifetime time.Duration) *crashLab {
	t.Helper()
	bins := crashBinaries(t)
	key := newSymmetricKey(t)
	e := startEmulator(t, bins, fmt.Sprintf("certificates: {lifetime: %s, credential_api_delay: 1s}\nenrollments:\n%s",
		lifetime, symmetricEnrollment("crash-fleet", key, true)))
	rootPEM, err := os.ReadFile(e.ep.DeviceRootFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootPEM) {
		t.Fatalf("%s holds no certificate", e.ep.DeviceRootFile)
	}
	return &crashLab{
		bins: bins, emu: e, hubPort: e.hubPort(t), onboarding: symmetricOnboarding(t, key, true),
		roots: roots, lifetime: lifetime, http: &http.Client{Timeout: 10 * time.Second}, tally: crashNewTally(),
	}
}

// device is the emulator's record of a device; false while DPS has not
// assigned it.
func (l *crashLab) device(id string) (emuDevice, bool, error) {
	var d emuDevice
	resp, err := l.http.Get(l.emu.ep.Admin + "/api/devices/" + id)
	if err != nil {
		return d, false, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotFound:
		return d, false, nil
	case http.StatusOK:
		return d, true, json.NewDecoder(resp.Body).Decode(&d)
	}
	return d, false, fmt.Errorf("admin API GET /api/devices/%s: %s", id, resp.Status)
}

// reportedSerial is the certificate serial the device last reported in its
// twin ("" before any report).
func (l *crashLab) reportedSerial(id string) (string, error) {
	resp, err := l.http.Get(l.emu.ep.Admin + "/api/devices/" + id + "/twin")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("admin API GET /api/devices/%s/twin: %s", id, resp.Status)
	}
	var twin struct {
		Reported struct {
			Certificate *struct {
				SerialNumber string `json:"serialNumber"`
			} `json:"certificate"`
		} `json:"reported"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&twin); err != nil {
		return "", err
	}
	if twin.Reported.Certificate == nil {
		return "", nil
	}
	return twin.Reported.Certificate.SerialNumber, nil
}

// crashRig is one worker: a swtpm and the device currently run on it. A
// fresh device is a new state directory for the same registration ID.
type crashRig struct {
	lab   *crashLab
	regID string
	tpm   string // the swtpm's spec
	dir   string
	n     int
	dev   *agentDevice
}

func (l *crashLab) newRig(t *testing.T, i int) *crashRig {
	t.Helper()
	return &crashRig{lab: l, regID: fmt.Sprintf("crash-gw-%d", i), tpm: tpmtest.StartSwtpm(t).Spec, dir: t.TempDir()}
}

// freshDevice starts over with an empty state directory.
func (r *crashRig) freshDevice() error {
	if r.dev != nil {
		_ = os.RemoveAll(filepath.Dir(r.dev.stateDir))
	}
	r.n++
	dir := filepath.Join(r.dir, "device-"+strconv.Itoa(r.n))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	d := &agentDevice{bins: r.lab.bins, regID: r.regID, cfgPath: filepath.Join(dir, "config.yaml"), stateDir: filepath.Join(dir, "state")}
	d.cfg = agentConfig{
		IDScope: r.lab.emu.ep.IDScope, RegistrationID: r.regID, Onboarding: r.lab.onboarding,
		DPSEndpoint: r.lab.emu.ep.DPS, TrustBundle: r.lab.emu.ep.TLSCAFile, TPM: r.tpm,
		StateDir: d.stateDir, HubPort: r.lab.hubPort,
	}
	if err := os.WriteFile(d.cfgPath, []byte(d.cfg.yaml()), 0o600); err != nil {
		return err
	}
	r.dev = d
	return nil
}

// file is a path for the run's own files (kill logs, traces), outside the
// state directory.
func (r *crashRig) file(name string) string {
	return filepath.Join(filepath.Dir(r.dev.stateDir), name)
}

// crashAgent is one `dpsagent run`.
type crashAgent struct {
	cmd     *exec.Cmd
	started time.Time
	out     lockedBuffer
	done    chan struct{}
	waitErr error
}

// start runs the agent with env (DPSAGENT_KILL_*) added to the test's
// environment without its DPSAGENT_* overrides.
func (r *crashRig) start(env ...string) (*crashAgent, error) {
	a := &crashAgent{done: make(chan struct{})}
	a.cmd = exec.Command(r.lab.bins.dpsagent, "run", "--config", r.dev.cfgPath)
	a.cmd.Env = append(childEnv(), env...)
	a.cmd.Stdout, a.cmd.Stderr = &a.out, &a.out
	// If the test binary dies, the agent goes with it.
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	a.started = time.Now()
	if err := a.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start dpsagent run: %w", err)
	}
	go func() {
		a.waitErr = a.cmd.Wait()
		close(a.done)
	}()
	return a, nil
}

func (a *crashAgent) exited() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}

// waitExit waits for the agent to end by itself (at its kill point).
func (a *crashAgent) waitExit(limit time.Duration) error {
	select {
	case <-a.done:
		return nil
	case <-time.After(limit):
		a.kill()
		return fmt.Errorf("dpsagent run did not reach its kill point within %s", limit)
	}
}

// diedBySIGKILL says how the agent ended, for an error message when it is
// not SIGKILL.
func (a *crashAgent) diedBySIGKILL() (bool, string) {
	<-a.done
	ws, ok := a.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
		return true, ""
	}
	return false, a.cmd.ProcessState.String()
}

// kill sends SIGKILL to the agent (by its PID) and waits for it to end.
func (a *crashAgent) kill() {
	if !a.exited() {
		_ = a.cmd.Process.Kill()
	}
	<-a.done
}

// stop asks the agent to shut down (SIGTERM) and wants exit status 0 within
// a few seconds, as the systemd unit does.
func (a *crashAgent) stop() error {
	if a.exited() {
		return fmt.Errorf("dpsagent run had exited by itself (%v)", a.waitErr)
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(10 * time.Second):
		a.kill()
		return errors.New("dpsagent run did not exit within 10s of SIGTERM")
	}
	if code := a.cmd.ProcessState.ExitCode(); code != exitOK {
		return fmt.Errorf("dpsagent run exited with %d after SIGTERM, want 0", code)
	}
	return nil
}

// tail is the end of the agent's output, for failure messages.
func (a *crashAgent) tail() string {
	const max = 6 << 10
	s := a.out.String()
	if len(s) > max {
		s = "...\n" + s[len(s)-max:]
	}
	return s
}

// crashPoll polls probe every 100 ms until it reports ok. It fails when
// probe returns an error, after limit, or at once when agent (if not nil) has
// exited; the error carries what probe last saw.
func crashPoll(limit time.Duration, what string, agent *crashAgent, probe func() (seen string, ok bool, err error)) error {
	deadline := time.Now().Add(limit)
	for {
		seen, ok, err := probe()
		switch {
		case ok:
			return nil
		case err != nil:
			return fmt.Errorf("waiting for %s: %w", what, err)
		case agent != nil && agent.exited():
			return fmt.Errorf("waiting for %s: dpsagent run exited (%v); last seen: %s", what, agent.waitErr, seen)
		case time.Now().After(deadline):
			return fmt.Errorf("%s did not happen within %s; last seen: %s", what, limit, seen)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// crashKillPoint is one line of a kill log or trace: "N NAME".
type crashKillPoint struct {
	N    int
	Name string
}

// crashReadKillPoints reads a kill log or trace; a missing file has none.
func crashReadKillPoints(path string) ([]crashKillPoint, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []crashKillPoint
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n, name, ok := strings.Cut(sc.Text(), " ")
		num, err := strconv.Atoi(n)
		if !ok || err != nil {
			return nil, fmt.Errorf("%s: malformed line %q", path, sc.Text())
		}
		out = append(out, crashKillPoint{N: num, Name: name})
	}
	return out, sc.Err()
}

// crashReadSequence reads a trace as the names of kill points 1, 2, ... in order.
func crashReadSequence(path string) ([]string, error) {
	points, err := crashReadKillPoints(path)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(points))
	for i, p := range points {
		if p.N != i+1 {
			return nil, fmt.Errorf("%s: line %d is kill point %d", path, i+1, p.N)
		}
		names[i] = p.Name
	}
	return names, nil
}
