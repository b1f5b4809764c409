// Package tpmtest gives tests a TPM: the go-tpm-tools reference simulator in
// process, or a real swtpm process on a free loopback port. Both are stopped in
// the test's cleanup. Under CI=true a missing swtpm fails the test instead of
// skipping it, so a green CI cannot hide a suite that never ran.
//
// The simulator needs cgo; the swtpm helpers do not, so test binaries built
// with CGO_ENABLED=0 (for ARM, run under qemu) still run every swtpm test and
// skip the simulator ones.
package tpmtest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Swtpm is a running swtpm process.
type Swtpm struct {
	// Spec is what tpm.Open takes: tcp:127.0.0.1:PORT or unix:PATH.
	Spec     string
	StateDir string
	cmd      *exec.Cmd
	done     chan struct{}
	waitErr  error
}

// RequireSwtpm returns the swtpm path, failing under CI=true and skipping
// elsewhere when it is not installed.
func RequireSwtpm(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("swtpm")
	if err == nil {
		return path
	}
	msg := "swtpm is not installed: run `make test` as root (it installs it), or apt-get install swtpm swtpm-tools"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// StartSwtpm starts swtpm with its state in a new temporary directory. The
// TPM is not sent TPM2_Startup, as after a cold boot, so the first command
// meets TPM_RC_INITIALIZE.
func StartSwtpm(t testing.TB) *Swtpm {
	t.Helper()
	return StartSwtpmWithState(t, t.TempDir())
}

// StartSwtpmWithState starts swtpm on an existing state directory, so a test
// can stop a TPM and start it again with the same seeds.
func StartSwtpmWithState(t testing.TB, dir string) *Swtpm {
	t.Helper()
	bin := RequireSwtpm(t)
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("find a free port for swtpm: %v", err)
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		s, err := startSwtpm(bin, dir, "type=tcp,bindaddr=127.0.0.1,port="+strconv.Itoa(port), "tcp", addr)
		if err == nil {
			t.Cleanup(s.Stop)
			return s
		}
		lastErr = err // most likely the port was taken in between: try another
	}
	t.Fatalf("start swtpm: %v", lastErr)
	return nil
}

// StartSwtpmUnix starts swtpm serving its unixio socket (Spec is unix:PATH).
func StartSwtpmUnix(t testing.TB) *Swtpm {
	t.Helper()
	bin := RequireSwtpm(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "tpm.sock")
	s, err := startSwtpm(bin, dir, "type=unixio,path="+sock, "unix", sock)
	if err != nil {
		t.Fatalf("start swtpm: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

func startSwtpm(bin, dir, server, network, addr string) (*Swtpm, error) {
	cmd := exec.Command(bin, "socket", "--tpm2",
		"--tpmstate", "dir="+dir,
		"--server", server,
		"--ctrl", "type=unixio,path="+filepath.Join(dir, "ctrl.sock"),
		"--flags", "not-need-init",
		"--log", "file="+filepath.Join(dir, "swtpm.log"),
	)
	// If the test binary dies, swtpm goes with it instead of holding the port.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &Swtpm{Spec: network + ":" + addr, StateDir: dir, cmd: cmd, done: make(chan struct{})}
	go func() {
		s.waitErr = cmd.Wait()
		close(s.done)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			log, _ := os.ReadFile(filepath.Join(dir, "swtpm.log"))
			return nil, fmt.Errorf("swtpm exited (%v): %s", s.waitErr, log)
		default:
		}
		if network == "tcp" {
			if c, err := net.DialTimeout(network, addr, 200*time.Millisecond); err == nil {
				_ = c.Close()
				return s, nil
			}
		} else if _, err := os.Stat(addr); err == nil {
			// Probing a unixio socket by connecting would use up swtpm's one
			// connection; the socket file existing means it is listening.
			return s, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.Stop()
	return nil, errors.New("swtpm did not open its socket within 10s")
}

// Stop ends swtpm by its PID (SIGTERM, then SIGKILL after 5 s) and waits for it
// to exit. It is safe to call more than once.
func (s *Swtpm) Stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
		return
	case <-time.After(5 * time.Second):
	}
	_ = s.cmd.Process.Kill()
	<-s.done
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
