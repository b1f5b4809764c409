package store

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestSecondOpenIsRefused(t *testing.T) {
	dir := stateDir(t)
	first := openStore(t, dir, testOptions(t))

	_, err := Open(dir, testOptions(t))
	var le *LockedError
	if !errors.As(err, &le) || !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want a *LockedError", err)
	}
	if le.PID != os.Getpid() {
		t.Errorf("LockedError.PID = %d, want the holder's pid %d", le.PID, os.Getpid())
	}
	for _, hint := range []string{dir, "daemon", "provision", "systemctl stop dpsagent"} {
		if !strings.Contains(err.Error(), hint) {
			t.Errorf("error %q does not mention %q", err, hint)
		}
	}
	// The refused Open must not have touched the holder's state.
	if _, err := first.Load(); err != nil {
		t.Fatal(err)
	}

	first.Close()
	openStore(t, dir, testOptions(t))
}

// The helper process: opens the directory named by the variable, says so on
// stdout, and holds the lock until killed (or its stdin closes, so that it
// never outlives a parent that died).
const lockHelperEnv = "DPSAGENT_STORE_TEST_HOLD_LOCK"

func TestLockHelperProcess(t *testing.T) {
	dir := os.Getenv(lockHelperEnv)
	if dir == "" {
		t.Skip("only runs as the helper of TestLockAcrossProcesses")
	}
	s, err := Open(dir, Options{})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	defer s.Close()
	fmt.Println("locked")
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// TestLockAcrossProcesses: another process holding the directory keeps this
// one out, and its death (kill -9 included) lets it in without any clean-up.
func TestLockAcrossProcesses(t *testing.T) {
	dir := stateDir(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockHelperProcess$")
	cmd.Env = append(os.Environ(), lockHelperEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe() // held open: the helper waits on it
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "locked\n" {
		t.Fatalf("helper said %q, %v; want \"locked\"", line, err)
	}

	_, err = Open(dir, testOptions(t))
	var le *LockedError
	if !errors.As(err, &le) {
		t.Fatalf("Open while another process holds the lock: %v, want a *LockedError", err)
	}
	if le.PID != cmd.Process.Pid {
		t.Errorf("LockedError.PID = %d, want the helper's pid %d", le.PID, cmd.Process.Pid)
	}

	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	openStore(t, dir, testOptions(t))
}
