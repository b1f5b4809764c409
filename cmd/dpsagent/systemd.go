package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dpsagent/dpsagent/agent"
)

// notifier speaks systemd's notify protocol (sd_notify): READY, STATUS lines,
// watchdog pings, STOPPING. It is quiet when not started by systemd (no
// NOTIFY_SOCKET), so the same binary runs anywhere.
type notifier struct {
	addr     *net.UnixAddr
	watchdog bool

	mu         sync.Mutex
	lastStatus string
}

// newNotifier reads the environment systemd sets; it returns nil outside systemd.
func newNotifier(getenv func(string) string) *notifier {
	path := getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if strings.HasPrefix(path, "@") {
		path = "\x00" + path[1:] // an abstract socket
	}
	n := &notifier{addr: &net.UnixAddr{Name: path, Net: "unixgram"}}
	if usec, err := strconv.ParseInt(getenv("WATCHDOG_USEC"), 10, 64); err == nil && usec > 0 {
		pid := getenv("WATCHDOG_PID")
		n.watchdog = pid == "" || pid == strconv.Itoa(os.Getpid())
	}
	return n
}

func (n *notifier) send(state string) {
	if n == nil {
		return
	}
	conn, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return // systemd went away; nothing useful to do about it
	}
	defer conn.Close()
	_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = conn.Write([]byte(state))
}

// ready says the daemon runs; it does not wait for provisioning, so a device
// without network does not hold up boot.
func (n *notifier) ready() { n.send("READY=1\nSTATUS=starting") }

func (n *notifier) stopping() { n.send("STOPPING=1\nSTATUS=stopping") }

// ping is the watchdog heartbeat, sent from the agent's loops.
func (n *notifier) ping() {
	if n != nil && n.watchdog {
		n.send("WATCHDOG=1")
	}
}

// status sends a plain-language STATUS= line when it changes.
func (n *notifier) status(s agent.Status) {
	if n == nil {
		return
	}
	line := statusLine(s)
	n.mu.Lock()
	changed := line != n.lastStatus
	n.lastStatus = line
	n.mu.Unlock()
	if changed {
		n.send("STATUS=" + line)
	}
}

// statusLine is one line for `systemctl status`: where the agent stands.
func statusLine(s agent.Status) string {
	var b strings.Builder
	switch s.State {
	case agent.StateConnected:
		fmt.Fprintf(&b, "connected to %s", s.AssignedHub)
	case agent.StateDisconnected:
		fmt.Fprintf(&b, "disconnected from %s, reconnecting", s.AssignedHub)
	case agent.StateProvisioning:
		b.WriteString("registering with DPS")
	case agent.StateRenewing:
		b.WriteString("renewing the certificate")
	case agent.StateWaitingForClock:
		b.WriteString("waiting for the clock to be set (time synchronisation)")
	case agent.StateError:
		b.WriteString("error")
		if s.LastError != nil {
			fmt.Fprintf(&b, ": %s", s.LastError.Message)
		}
		return b.String()
	default:
		b.WriteString(string(s.State))
	}
	if c := s.Certificate; c != nil {
		fmt.Fprintf(&b, "; certificate valid until %s", c.NotAfter.UTC().Format("2006-01-02 15:04 MST"))
	}
	if !s.NextRenewal.IsZero() {
		fmt.Fprintf(&b, "; renewal at %s", s.NextRenewal.UTC().Format("2006-01-02 15:04 MST"))
	}
	return b.String()
}
