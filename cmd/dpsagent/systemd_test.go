package main

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dpsagent/dpsagent/agent"
)

func TestNotifierSpeaksSdNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	env := map[string]string{"NOTIFY_SOCKET": sock, "WATCHDOG_USEC": "300000000", "WATCHDOG_PID": strconv.Itoa(os.Getpid())}
	n := newNotifier(func(k string) string { return env[k] })
	read := func() string {
		t.Helper()
		buf := make([]byte, 4096)
		_ = l.SetReadDeadline(time.Now().Add(5 * time.Second))
		k, err := l.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		return string(buf[:k])
	}
	n.ready()
	if got := read(); !strings.HasPrefix(got, "READY=1\n") {
		t.Errorf("ready sent %q", got)
	}
	st := agent.Status{State: agent.StateConnected, AssignedHub: "hub.example",
		Certificate: &agent.CertificateStatus{NotAfter: time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)},
		NextRenewal: time.Date(2027, 2, 20, 8, 30, 0, 0, time.UTC)}
	n.status(st)
	if got, want := read(), "STATUS=connected to hub.example; certificate valid until 2027-03-01 12:00 UTC; renewal at 2027-02-20 08:30 UTC"; got != want {
		t.Errorf("status sent %q\nwant %q", got, want)
	}
	n.status(st) // unchanged: nothing sent
	n.ping()
	if got := read(); got != "WATCHDOG=1" {
		t.Errorf("after an unchanged status and a ping, got %q", got)
	}

	other := newNotifier(func(k string) string {
		if k == "WATCHDOG_PID" {
			return "1"
		}
		return env[k]
	})
	if other.watchdog {
		t.Error("a watchdog meant for another PID was taken")
	}
	if newNotifier(func(string) string { return "" }) != nil {
		t.Error("outside systemd the notifier must be quiet (nil)")
	}
	var quiet *notifier
	quiet.ready()
	quiet.ping()
	quiet.status(st)
}
