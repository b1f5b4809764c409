package dps

import (
	"testing"
	"time"
)

func TestPacerDelay(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(secs ...float64) []time.Time {
		out := make([]time.Time, len(secs))
		for i, s := range secs {
			out[i] = t0.Add(time.Duration(s * float64(time.Second)))
		}
		return out
	}
	tests := []struct {
		name string
		sent []time.Time
		now  time.Time
		wait time.Duration
		want time.Duration
	}{
		{"first poll after retry-after", at(0), t0, 3 * time.Second, 3 * time.Second},
		{"retry-after 0 still waits a second", at(0), t0, 0, time.Second},
		{"four sent: the fifth is free", at(0, 1, 2, 3), t0.Add(3 * time.Second), time.Second, time.Second},
		{"five in 4 s: the sixth waits for the window", at(0, 1, 2, 3, 4), t0.Add(4 * time.Second), time.Second, 6 * time.Second},
		{"window already passed", at(0, 1, 2, 3, 4), t0.Add(20 * time.Second), time.Second, time.Second},
		{"long retry-after wins", at(0, 1, 2, 3, 4), t0.Add(4 * time.Second), 30 * time.Second, 30 * time.Second},
	}
	for _, tt := range tests {
		var p pacer
		for _, s := range tt.sent {
			p.record(s)
		}
		if got := p.delay(tt.now, tt.wait); got != tt.want {
			t.Errorf("%s: delay %s, want %s", tt.name, got, tt.want)
		}
	}
}

// Whatever DPS says, a steady stream of requests never puts more than five
// in any ten seconds.
func TestPacerNeverExceedsLimit(t *testing.T) {
	var p pacer
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var sent []time.Time
	for i := range 50 {
		wait := time.Duration(i%3) * 500 * time.Millisecond // 0, 0.5 s, 1 s
		now = now.Add(p.delay(now, wait))
		p.record(now)
		sent = append(sent, now)
	}
	for i := pollLimit; i < len(sent); i++ {
		if d := sent[i].Sub(sent[i-pollLimit]); d < pollWindow {
			t.Fatalf("requests %d and %d are %s apart: six in %s", i-pollLimit, i, d, pollWindow)
		}
	}
}

func TestWaits(t *testing.T) {
	given := responseTopic{retryAfter: 7 * time.Second, hasRetryAfter: true}
	if got := pollWait(given); got != 7*time.Second {
		t.Errorf("pollWait with retry-after = %s", got)
	}
	if got := pollWait(responseTopic{}); got != 2*time.Second {
		t.Errorf("pollWait without retry-after = %s, want 2s", got)
	}
	if got := throttleWait(given, 5); got != 7*time.Second {
		t.Errorf("throttleWait with retry-after = %s", got)
	}
	for n, want := range map[int]time.Duration{1: 2 * time.Second, 2: 4 * time.Second, 3: 8 * time.Second, 5: 30 * time.Second, 50: 30 * time.Second} {
		if got := throttleWait(responseTopic{}, n); got != want {
			t.Errorf("throttleWait(n=%d) = %s, want %s", n, got, want)
		}
	}
}
