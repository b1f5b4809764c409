package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dpsagent/dpsagent/tpm/keys/keytest"
)

// The end-to-end tests run the real binaries: dpsagent as shipped (static,
// CGO_ENABLED=0) and iotemu, over TLS on loopback, with swtpm as the TPM.
// Each test has its own emulator and its own swtpm, so they run in parallel.

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		_ = os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// binaries are the commands under test, built once per test binary run.
type binaries struct{ dpsagent, iotemu string }

var built struct {
	once sync.Once
	dir  string
	bins binaries
	err  error
}

// buildBinaries builds dpsagent as it ships (CGO_ENABLED=0) and iotemu (cgo,
// for its TPM simulator) on first use. It skips with -short.
func buildBinaries(t testing.TB) binaries {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binaries; skipped with -short")
	}
	goTool := keytest.RequireTool(t, "go", "golang-go")
	keytest.RequireTool(t, "gcc", "gcc libssl-dev") // iotemu's TPM simulator is cgo
	built.once.Do(func() { built.dir, built.bins, built.err = build(goTool) })
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.bins
}

func build(goTool string) (string, binaries, error) {
	dir, err := os.MkdirTemp("", "dpsagent-e2e-bin-")
	if err != nil {
		return "", binaries{}, err
	}
	b := binaries{dpsagent: filepath.Join(dir, "dpsagent"), iotemu: filepath.Join(dir, "iotemu")}
	// dpsagent is compiled as the release is (Makefile GOFLAGS_REL, without
	// the version stamp), so the end-to-end tests run what ships.
	// DPSAGENT_E2E_BUILDFLAGS replaces those flags, to compare builds in the
	// benchmarks (DPSAGENT_E2E_BUILDFLAGS= for the compiler's defaults).
	releaseFlags := []string{"-gcflags=all=-l"}
	if v, ok := os.LookupEnv("DPSAGENT_E2E_BUILDFLAGS"); ok {
		releaseFlags = strings.Fields(v)
	}
	for _, target := range []struct {
		cgo, out, pkg string
		flags         []string
	}{
		{"0", b.dpsagent, "github.com/dpsagent/dpsagent/cmd/dpsagent", releaseFlags},
		{"1", b.iotemu, "github.com/dpsagent/dpsagent/cmd/iotemu", nil},
	} {
		args := append([]string{"build", "-trimpath"}, target.flags...)
		cmd := exec.Command(goTool, append(args, "-o", target.out, target.pkg)...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED="+target.cgo)
		if out, err := cmd.CombinedOutput(); err != nil {
			return dir, b, fmt.Errorf("CGO_ENABLED=%s go build %s: %w\n%s", target.cgo, target.pkg, err, out)
		}
	}
	return dir, b, nil
}

// childEnv is the test's environment without DPSAGENT_* overrides, which
// would change the configuration under test.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DPSAGENT_") {
			env = append(env, kv)
		}
	}
	return env
}

// lockedBuffer collects a child's output while it runs.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// process is a child process a test started. Its output (stdout and stderr)
// is kept for the failure log; onLine sees each line as it comes.
type process struct {
	cmd      *exec.Cmd
	out      lockedBuffer
	waited   chan struct{}
	done     chan struct{} // after waited, once all output is read
	waitErr  error
	stopOnce sync.Once
	asked    atomic.Bool // stop was called
	stopped  bool        // exited within the grace after SIGTERM
}

func startProcess(t testing.TB, name string, onLine func(string), bin string, args ...string) *process {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = childEnv()
	// If the test binary dies, the child goes with it instead of holding ports.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &process{cmd: cmd, waited: make(chan struct{}), done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.waited)
		_ = pw.Close()
	}()
	go func() {
		r := bufio.NewReader(pr)
		for {
			line, err := r.ReadString('\n')
			_, _ = p.out.Write([]byte(line))
			if onLine != nil && line != "" {
				onLine(strings.TrimRight(line, "\n"))
			}
			if err != nil {
				break
			}
		}
		<-p.waited
		close(p.done)
	}()
	return p
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitCode is the code the process exited with, -1 if a signal ended it.
func (p *process) exitCode() int {
	<-p.done
	return p.cmd.ProcessState.ExitCode()
}

// stop sends SIGTERM to the process (by its PID) and waits up to grace for
// it to exit, then kills it. It reports whether it exited within the grace.
func (p *process) stop(grace time.Duration) bool {
	p.asked.Store(true)
	p.stopOnce.Do(func() {
		if p.exited() {
			p.stopped = true
			return
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
			p.stopped = true
		case <-time.After(grace):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p.stopped
}

// tail is the end of the process's output, enough to see why a test failed.
func (p *process) tail() string {
	const max = 24 << 10
	s := p.out.String()
	if len(s) > max {
		s = "...\n" + s[len(s)-max:]
	}
	return s
}

// eventually polls probe until it reports true, and fails the test after
// limit, or at once when agent (if not nil) has exited by itself. It returns
// the value that satisfied probe.
func eventually[T any](t testing.TB, limit time.Duration, what string, agent *process, probe func() (T, bool)) T {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		v, ok := probe()
		if ok {
			return v
		}
		if agent != nil && agent.exited() {
			t.Fatalf("waiting for %s: dpsagent run exited by itself (%v); last seen: %s", what, agent.waitErr, jsonText(v))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not happen within %s; last seen: %s", what, limit, jsonText(v))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
