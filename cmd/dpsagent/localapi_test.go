package main

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/dpsagent/dpsagent/cmd/dpsagent/internal/localhttp"
)

// A stop that comes before the server began to serve (the daemon stopping
// as it starts) is no news: nothing is logged, and the listener is closed.
func TestMetricsAndStatusEndpointsStoppedBeforeServeSayNothing(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	srv := localhttp.New(nil)
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	serveInBackground(srv, l, zap.New(core), "metrics endpoint")()
	for _, e := range logs.All() {
		t.Errorf("logged %q %v", e.Message, e.ContextMap())
	}
	if c, err := net.Dial("tcp", l.Addr().String()); err == nil {
		c.Close()
		t.Error("the listener is still open")
	}
}

// fakeDaemon listens on socket and answers every request with answer.
func fakeDaemon(t *testing.T, socket, answer string) {
	t.Helper()
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = http.ReadRequest(bufio.NewReader(c))
			_, _ = c.Write([]byte(answer))
			c.Close()
		}
	}()
}

// Only a socket that is missing or refuses connections means the daemon is
// not running: then status shows the state directory and renew says to
// start the daemon. Any other failure is reported as what it is, naming the
// socket.
func TestStatusAndRenewTellAnUnreachableDaemonFromAStoppedOne(t *testing.T) {
	t.Setenv("RUNTIME_DIRECTORY", "")
	for _, tc := range []struct {
		name    string
		daemon  func(t *testing.T, socket string)
		running bool   // a daemon is there, if it cannot be asked
		want    string // in stderr when running
	}{
		{"no socket", func(*testing.T, string) {}, false, ""},
		{"stale socket", func(t *testing.T, socket string) {
			l, err := net.Listen("unix", socket)
			if err != nil {
				t.Fatal(err)
			}
			l.(*net.UnixListener).SetUnlinkOnClose(false)
			l.Close()
		}, false, ""},
		{"malformed answer", func(t *testing.T, socket string) { fakeDaemon(t, socket, "nonsense\r\n\r\n") }, true, "malformed HTTP"},
		{"oversized answer", func(t *testing.T, socket string) {
			fakeDaemon(t, socket, "HTTP/1.1 200 OK\r\nContent-Length: 5000000\r\n\r\n"+strings.Repeat("x", 5000000))
		}, true, "over 4194304 bytes"},
		{"permission denied", func(t *testing.T, socket string) {
			if os.Geteuid() == 0 {
				t.Skip("root connects whatever the socket's mode")
			}
			fakeDaemon(t, socket, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
			if err := os.Chmod(socket, 0); err != nil {
				t.Fatal(err)
			}
		}, true, "permission denied on SOCKET: run as root or as a member of group dpsagent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stateDir := t.TempDir()
			socket := filepath.Join(stateDir, socketName)
			path := configDir(t, minimalConfig+"advanced:\n  state_dir: "+stateDir+"\n")
			tc.daemon(t, socket)
			want := strings.ReplaceAll(tc.want, "SOCKET", socket)

			code, stdout, stderr := runCLI(t, "status", "--config", path)
			t.Logf("status: exit %d\n%s", code, stderr)
			switch {
			case !tc.running && (code != exitOK || !strings.Contains(stdout, "from the state directory; the daemon is not running")):
				t.Errorf("status: exit %d\n%s%s\nwant the state directory, the daemon not running", code, stdout, stderr)
			case tc.running && (code != exitFailure || !strings.Contains(stderr, socket) || !strings.Contains(stderr, want) ||
				strings.Contains(stdout+stderr, "not running")):
				t.Errorf("status: exit %d\n%s%s\nwant exit %d and %q naming %s, not \"not running\"", code, stdout, stderr, exitFailure, want, socket)
			}

			code, stdout, stderr = runCLI(t, "renew", "--config", path)
			t.Logf("renew: exit %d\n%s", code, stderr)
			switch {
			case code != exitFailure:
				t.Errorf("renew: exit %d, want %d\n%s%s", code, exitFailure, stdout, stderr)
			case !tc.running && (!strings.Contains(stderr, "the dpsagent daemon is not running") || !strings.Contains(stderr, "systemctl start dpsagent")):
				t.Errorf("renew: %s; want the daemon not running and how to start it", stderr)
			case tc.running && (!strings.Contains(stderr, socket) || !strings.Contains(stderr, want) || strings.Contains(stderr, "not running")):
				t.Errorf("renew: %s; want %q naming %s, not \"not running\"", stderr, want, socket)
			}
		})
	}
}

// The causes a test cannot always make (root connects whatever the mode; a
// timeout takes 5 s) as the dialer and the client report them.
func TestStatusDaemonErrorSaysWhatFailed(t *testing.T) {
	const socket = "/run/dpsagent/dpsagent.sock"
	dial := func(errno syscall.Errno) error {
		return &net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", errno)}
	}
	for _, tc := range []struct {
		err      error
		noDaemon bool
		want     string
	}{
		{dial(syscall.ENOENT), true, "the dpsagent daemon is not running"},
		{dial(syscall.ECONNREFUSED), true, "the dpsagent daemon is not running"},
		{dial(syscall.EACCES), false, "permission denied on " + socket + ": run as root or as a member of group dpsagent"},
		{&net.OpError{Op: "read", Net: "unix", Err: os.ErrDeadlineExceeded}, false, "local API on " + socket + ": read unix: i/o timeout"},
		{errors.New("read the answer to GET /v1/status: malformed HTTP response"), false, "local API on " + socket + ": read the answer"},
	} {
		err := daemonError(socket, tc.err)
		if errors.Is(err, errNoDaemon) != tc.noDaemon || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v; want %q (no daemon: %v)", tc.err, err, tc.want, tc.noDaemon)
		}
	}
}
