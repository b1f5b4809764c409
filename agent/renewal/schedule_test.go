package renewal_test

import (
	"strings"
	"testing"
	"time"

	"github.com/dpsagent/dpsagent/agent/renewal"
)

func TestNextDefaultPolicyAcrossLifetimes(t *testing.T) {
	// Default policy: 80% of the lifetime, less up to 5%. Expected offsets from NotBefore are written
	// out by hand so an error in the shared arithmetic cannot hide in the test.
	tests := []struct {
		life     time.Duration
		atLowest time.Duration // draw 0: the threshold itself
		atHalf   time.Duration // draw ½: half the jitter window earlier
		jitMax   time.Duration // the whole window, 5% of the lifetime
		reason   string        // the reason at draw ½
	}{
		{time.Minute, 48 * time.Second, 46500 * time.Millisecond, 3 * time.Second,
			"80% of the certificate's 1-minute lifetime, less 1.5s jitter"},
		{10 * time.Minute, 8 * time.Minute, 7*time.Minute + 45*time.Second, 30 * time.Second,
			"80% of the certificate's 10-minute lifetime, less 15s jitter"},
		{time.Hour, 48 * time.Minute, 46*time.Minute + 30*time.Second, 3 * time.Minute,
			"80% of the certificate's 1-hour lifetime, less 1m30s jitter"},
		{day, 19*time.Hour + 12*time.Minute, 18*time.Hour + 36*time.Minute, 72 * time.Minute,
			"80% of the certificate's 1-day lifetime, less 36m jitter"},
		{7 * day, 5*day + 14*time.Hour + 24*time.Minute, 5*day + 10*time.Hour + 12*time.Minute, 8*time.Hour + 24*time.Minute,
			"80% of the certificate's 7-day lifetime, less 4h12m jitter"},
		{30 * day, 24 * day, 23*day + 6*time.Hour, 36 * time.Hour,
			"80% of the certificate's 30-day lifetime, less 18h jitter"},
		{90 * day, 72 * day, 69*day + 18*time.Hour, 4*day + 12*time.Hour,
			"80% of the certificate's 90-day lifetime, less 2d6h jitter"},
	}
	for _, tt := range tests {
		t.Run(tt.life.String(), func(t *testing.T) {
			cert := certFor(tt.life)
			for _, p := range []renewal.Policy{{}, renewal.DefaultPolicy()} {
				if got := renewal.Next(cert, p, drawLowest).At.Sub(issued); got != tt.atLowest {
					t.Errorf("draw 0: renew %v after issue, want %v", got, tt.atLowest)
				}
				half := renewal.Next(cert, p, drawHalf)
				if got := half.At.Sub(issued); got != tt.atHalf {
					t.Errorf("draw ½: renew %v after issue, want %v", got, tt.atHalf)
				}
				if half.Reason != tt.reason {
					t.Errorf("draw ½: reason %q, want %q", half.Reason, tt.reason)
				}
				// The highest draw comes within a nanosecond of the whole window, never past it.
				if got, want := renewal.Next(cert, p, drawHighest).At.Sub(issued), tt.atLowest-tt.jitMax+1; got != want {
					t.Errorf("highest draw: renew %v after issue, want %v", got, want)
				}
			}
		})
	}
}

func TestNextThresholdBeforeExpiry(t *testing.T) {
	tests := []struct {
		name      string
		threshold string
		jitter    string
		life      time.Duration
		draw      renewal.Draw
		wantAt    time.Duration // after NotBefore
		reason    string
	}{
		{"7d on 90 days", "7d", "5%", 90 * day, drawLowest, 83 * day,
			"7d before the end of the certificate's 90-day lifetime"},
		{"36h on 30 days, half jitter", "36h", "5%", 30 * day, drawHalf, 30*day - 36*time.Hour - 18*time.Hour,
			"36h before the end of the certificate's 30-day lifetime, less 18h jitter"},
		{"90m on a day", "90m", "0%", day, drawHighest, day - 90*time.Minute,
			"1h30m before the end of the certificate's 1-day lifetime"},
		{"exactly half is not clamped", "36h", "0%", 72 * time.Hour, drawLowest, 36 * time.Hour,
			"36h before the end of the certificate's 3-day lifetime"},
		// A margin longer than half the lifetime is held to half of it, and the reason says so:
		// renewing at NotBefore would renew every new certificate at once, forever.
		{"7d on 7 days", "7d", "5%", 7 * day, drawLowest, 84 * time.Hour,
			"50% of the certificate's 7-day lifetime, since 7d before expiry would come earlier than that"},
		{"36h on 48 hours", "36h", "0%", 48 * time.Hour, drawLowest, 24 * time.Hour,
			"50% of the certificate's 2-day lifetime, since 36h before expiry would come earlier than that"},
		{"7d on a 1-minute demo, half jitter", "7d", "5%", time.Minute, drawHalf, 30*time.Second - 1500*time.Millisecond,
			"50% of the certificate's 1-minute lifetime, since 7d before expiry would come earlier than that, less 1.5s jitter"},
		{"tiny margin", "1ns", "0%", 30 * day, drawHighest, 30*day - 1,
			"1ns before the end of the certificate's 30-day lifetime"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := renewal.Next(certFor(tt.life), policy(t, tt.threshold, tt.jitter), tt.draw)
			if got := s.At.Sub(issued); got != tt.wantAt {
				t.Errorf("renew %v after issue, want %v", got, tt.wantAt)
			}
			if s.Reason != tt.reason {
				t.Errorf("reason %q\n want %q", s.Reason, tt.reason)
			}
		})
	}
}

func TestNextClampsToValidity(t *testing.T) {
	// 1% less up to 50% is a policy Validate refuses, but Next must still never leave the validity
	// period for whatever it is given.
	p := policy(t, "1%", "50%")
	cert := certFor(30 * day)
	s := renewal.Next(cert, p, drawHighest)
	if !s.At.Equal(cert.NotBefore) {
		t.Errorf("At = %v, want NotBefore %v", s.At, cert.NotBefore)
	}
	if !strings.Contains(s.Reason, "before the certificate is valid, so as soon as it is") {
		t.Errorf("reason %q does not say the time was clamped", s.Reason)
	}
	// Draw 0 is not clamped: 1% of 30 days.
	if got := renewal.Next(cert, p, drawLowest).At.Sub(issued); got != 7*time.Hour+12*time.Minute {
		t.Errorf("draw 0: renew %v after issue, want 7h12m", got)
	}
}

func TestNextMalformedCertificate(t *testing.T) {
	for _, life := range []time.Duration{0, -time.Hour} {
		cert := certFor(life)
		s := renewal.Next(cert, renewal.DefaultPolicy(), drawHalf)
		if !s.At.Equal(cert.NotAfter) {
			t.Errorf("lifetime %v: At = %v, want NotAfter %v", life, s.At, cert.NotAfter)
		}
		if !strings.Contains(s.Reason, "no validity period") {
			t.Errorf("lifetime %v: reason %q does not name the problem", life, s.Reason)
		}
	}
}

func TestNextUsesDrawNotChance(t *testing.T) {
	// The schedule must be a function of its inputs: the same certificate and draw give the same
	// time, and different draws give different times within the window.
	cert := certFor(30 * day)
	p := renewal.DefaultPolicy()
	a := renewal.Next(cert, p, renewal.DrawAt(0.25))
	for i := 0; i < 100; i++ {
		if b := renewal.Next(cert, p, renewal.DrawAt(0.25)); !b.At.Equal(a.At) {
			t.Fatalf("call %d: At = %v, first call gave %v", i, b.At, a.At)
		}
	}
	if b := renewal.Next(cert, p, renewal.DrawAt(0.75)); !b.At.Before(a.At) {
		t.Errorf("a larger draw should renew earlier: draw ¾ at %v, draw ¼ at %v", b.At, a.At)
	}
	if a.Jitter != 9*time.Hour {
		t.Errorf("draw ¼ of a 36h window: jitter %v, want 9h", a.Jitter)
	}
}
