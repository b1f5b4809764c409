package renewal_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dpsagent/dpsagent/agent/renewal"
)

func TestDecide(t *testing.T) {
	month := certFor(30 * day)
	monthDue := issued.Add(23*day + 6*time.Hour) // 80% less half of the 5% window
	demo := certFor(time.Minute)
	demoDue := issued.Add(46500 * time.Millisecond)
	epoch := time.Date(1970, 1, 1, 0, 0, 5, 0, time.UTC)

	tests := []struct {
		name      string
		cert      renewal.Validity
		now       time.Time
		built     time.Time
		action    renewal.Action
		recheckIn time.Duration
		reason    string // a part of the reason that matters to the reader
	}{
		{"just issued", month, issued, built, renewal.Wait, 10 * time.Minute,
			"80% of the certificate's 30-day lifetime, less 18h jitter"},
		{"a minute before due: wake exactly then", month, monthDue.Add(-time.Minute), built, renewal.Wait, time.Minute, "80%"},
		{"due now", month, monthDue, built, renewal.Renew, 0, "renewal is due now: 80% of"},
		{"due two hours ago", month, monthDue.Add(2 * time.Hour), built, renewal.Renew, 0, "renewal was due 2h ago"},
		{"last instant of validity", month, month.NotAfter, built, renewal.Renew, 0, "renewal was due 6d18h ago"},
		{"expired a second ago", month, month.NotAfter.Add(time.Second), built, renewal.RenewViaDPS, 0,
			"the certificate expired 1s ago (2025-03-31T12:00:00Z), so the hub will refuse it: renewing through DPS"},
		{"expired long ago", month, month.NotAfter.Add(400 * day), built, renewal.RenewViaDPS, 0, "expired 400d ago"},
		{"not yet valid by a second: look again then", month, issued.Add(-time.Second), built, renewal.WaitForClock, time.Second,
			"the clock reads 2025-03-01T11:59:59Z, earlier than the certificate's start (2025-03-01T12:00:00Z)"},
		{"not yet valid by an hour", month, issued.Add(-time.Hour), built, renewal.WaitForClock, 10 * time.Second,
			"earlier than the certificate's start"},
		{"clock not set: 1970", month, epoch, built, renewal.WaitForClock, 10 * time.Second,
			"the clock reads 1970-01-01T00:00:05Z, earlier than this build (2025-01-15T00:00:00Z)"},
		{"clock not set, no build date: the certificate still tells", month, epoch, time.Time{}, renewal.WaitForClock, 10 * time.Second,
			"earlier than the certificate's start"},
		{"clock before the build but after NotBefore", renewal.Validity{NotBefore: built.Add(-day), NotAfter: built.Add(29 * day)},
			built.Add(-time.Hour), built, renewal.WaitForClock, 10 * time.Second, "earlier than this build"},
		{"demo: checks every 3s", demo, issued.Add(10 * time.Second), built, renewal.Wait, 3 * time.Second,
			"80% of the certificate's 1-minute lifetime, less 1.5s jitter"},
		{"demo: due in 1.5s", demo, demoDue.Add(-1500 * time.Millisecond), built, renewal.Wait, 1500 * time.Millisecond, "80%"},
		{"demo: due", demo, demoDue, built, renewal.Renew, 0, "due now"},
		{"demo: waiting for clock no longer than a check", demo, epoch, built, renewal.WaitForClock, 3 * time.Second, "earlier than this build"},
		{"demo: expired", demo, demo.NotAfter.Add(time.Millisecond), built, renewal.RenewViaDPS, 0, "expired 1ms ago"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := renewal.Decide(tt.cert, tt.now, renewal.DefaultPolicy(), drawHalf, tt.built)
			if d.Action != tt.action {
				t.Errorf("action %v, want %v (reason %q)", d.Action, tt.action, d.Reason)
			}
			if d.RecheckIn != tt.recheckIn {
				t.Errorf("recheck in %v, want %v", d.RecheckIn, tt.recheckIn)
			}
			if !strings.Contains(d.Reason, tt.reason) {
				t.Errorf("reason %q\n does not contain %q", d.Reason, tt.reason)
			}
			if want := renewal.Next(tt.cert, renewal.DefaultPolicy(), drawHalf).At; !d.At.Equal(want) {
				t.Errorf("At %v, want the schedule's %v", d.At, want)
			}
		})
	}
}

func TestDecideClockJumps(t *testing.T) {
	// One certificate checked through a day of clock trouble. The renewal time must not move, and
	// each check must act on what the clock says now, not on what an earlier check saw.
	cert := certFor(30 * day)
	p := renewal.DefaultPolicy()
	draw := renewal.DrawFor([]byte("device secret"), []byte("certificate fingerprint"))
	due := renewal.Next(cert, p, draw).At

	steps := []struct {
		what   string
		now    time.Time
		action renewal.Action
	}{
		{"running normally", issued.Add(2 * day), renewal.Wait},
		{"reboot without RTC: 1970", time.Unix(12, 0), renewal.WaitForClock},
		{"NTP sets the clock", issued.Add(2*day + time.Minute), renewal.Wait},
		{"jumps forward past the renewal time", due.Add(time.Hour), renewal.Renew},
		{"jumps back before it (NTP correction)", due.Add(-time.Hour), renewal.Wait},
		{"jumps back before the certificate", issued.Add(-time.Hour), renewal.WaitForClock},
		{"jumps forward past expiry (long sleep)", cert.NotAfter.Add(time.Hour), renewal.RenewViaDPS},
		{"jumps back into validity", due.Add(-day), renewal.Wait},
	}
	for _, s := range steps {
		d := renewal.Decide(cert, s.now, p, draw, built)
		if d.Action != s.action {
			t.Errorf("%s: action %v, want %v (%s)", s.what, d.Action, s.action, d.Reason)
		}
		if !d.At.Equal(due) {
			t.Errorf("%s: renewal time moved to %v from %v", s.what, d.At, due)
		}
		if d.Action == renewal.Wait && (d.RecheckIn <= 0 || d.RecheckIn > 10*time.Minute || s.now.Add(d.RecheckIn).After(due)) {
			t.Errorf("%s: recheck in %v; want within 10m and not past the renewal time", s.what, d.RecheckIn)
		}
	}
}

func TestDecideMalformedCertificate(t *testing.T) {
	cert := renewal.Validity{NotBefore: issued, NotAfter: issued.Add(-time.Hour)}
	if d := renewal.Decide(cert, issued.Add(time.Minute), renewal.DefaultPolicy(), drawHalf, built); d.Action != renewal.RenewViaDPS {
		t.Errorf("certificate ending before it starts: action %v, want %v", d.Action, renewal.RenewViaDPS)
	}
	if d := renewal.Decide(cert, issued.Add(-2*time.Hour), renewal.DefaultPolicy(), drawHalf, built); d.Action != renewal.WaitForClock || d.RecheckIn <= 0 {
		t.Errorf("before its start: action %v recheck %v, want %v with a positive recheck", d.Action, d.RecheckIn, renewal.WaitForClock)
	}
}

func TestCheckClock(t *testing.T) {
	cert := certFor(30 * day)
	tests := []struct {
		name  string
		now   time.Time
		built time.Time
		ok    bool
	}{
		{"set", issued.Add(time.Hour), built, true},
		{"exactly NotBefore", issued, built, true},
		{"exactly the build date", built, built, false}, // built is still before NotBefore here
		{"1970", time.Unix(0, 0), built, false},
		{"before NotBefore", issued.Add(-time.Nanosecond), built, false},
		{"before the build, no certificate yet", built.Add(-time.Hour), built, false},
	}
	for _, tt := range tests {
		err := renewal.CheckClock(tt.now, tt.built, cert)
		if (err == nil) != tt.ok {
			t.Errorf("%s: CheckClock = %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, renewal.ErrClockNotSet) {
			t.Errorf("%s: %v does not wrap ErrClockNotSet", tt.name, err)
		}
	}
	// With no certificate yet (zero validity), only the build date counts.
	if err := renewal.CheckClock(built, built, renewal.Validity{}); err != nil {
		t.Errorf("at the build date with no certificate: %v", err)
	}
}

func TestCheckInterval(t *testing.T) {
	tests := []struct{ life, want time.Duration }{
		{90 * day, 10 * time.Minute},
		{7 * day, 10 * time.Minute},
		{200 * time.Minute, 10 * time.Minute},
		{time.Hour, 3 * time.Minute},
		{time.Minute, 3 * time.Second},
		{time.Second, 100 * time.Millisecond}, // never a busy loop
		{0, 100 * time.Millisecond},
		{-time.Hour, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := renewal.CheckInterval(tt.life); got != tt.want {
			t.Errorf("CheckInterval(%v) = %v, want %v", tt.life, got, tt.want)
		}
	}
}

func TestActionString(t *testing.T) {
	want := map[renewal.Action]string{
		renewal.WaitForClock: "waiting for clock",
		renewal.Wait:         "waiting",
		renewal.Renew:        "renew now",
		renewal.RenewViaDPS:  "expired: renew via DPS",
		renewal.Action(0):    "Action(0)",
	}
	for a, s := range want {
		if a.String() != s {
			t.Errorf("Action %d: %q, want %q", int(a), a.String(), s)
		}
	}
}
