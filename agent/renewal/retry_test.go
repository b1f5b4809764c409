package renewal_test

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/dpsagent/dpsagent/agent/renewal"
)

func TestRetryBounds(t *testing.T) {
	tests := []struct{ life, shortest, longest time.Duration }{
		{10 * 365 * day, time.Minute, time.Hour},
		{90 * day, time.Minute, time.Hour},
		{7 * day, time.Minute, time.Hour},
		{day, time.Minute, time.Hour},
		{time.Hour, 36 * time.Second, 3 * time.Minute},
		{10 * time.Minute, 6 * time.Second, 30 * time.Second},
		{time.Minute, 600 * time.Millisecond, 3 * time.Second},
		{time.Second, 100 * time.Millisecond, 100 * time.Millisecond}, // floor against busy loops
		{0, 100 * time.Millisecond, 100 * time.Millisecond},
	}
	for _, tt := range tests {
		s, l := renewal.RetryBounds(tt.life)
		if s != tt.shortest || l != tt.longest {
			t.Errorf("RetryBounds(%v) = %v, %v; want %v, %v", tt.life, s, l, tt.shortest, tt.longest)
		}
	}
}

func TestNextRetryBackoffPerAttempt(t *testing.T) {
	// Before the last 5%, attempt n waits between the shortest wait and min(longest, shortest×2^n).
	// The lowest random value gives the shortest wait, the highest gives the ceiling exactly.
	tests := []struct {
		life     time.Duration
		ceilings []time.Duration // for attempts 1, 2, 3…
	}{
		{30 * day, []time.Duration{2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 16 * time.Minute, 32 * time.Minute, time.Hour, time.Hour}},
		{time.Hour, []time.Duration{72 * time.Second, 144 * time.Second, 3 * time.Minute, 3 * time.Minute}},
		{time.Minute, []time.Duration{1200 * time.Millisecond, 2400 * time.Millisecond, 3 * time.Second, 3 * time.Second}},
	}
	for _, tt := range tests {
		cert := certFor(tt.life)
		now := issued.Add(tt.life / 2)
		shortest, _ := renewal.RetryBounds(tt.life)
		for i, ceiling := range tt.ceilings {
			attempt := i + 1
			if got := renewal.NextRetry(cert, now, attempt, 0, constSource(0)).Delay; got != shortest {
				t.Errorf("lifetime %v attempt %d, lowest draw: %v, want %v", tt.life, attempt, got, shortest)
			}
			hi := renewal.NextRetry(cert, now, attempt, 0, constSource(math.MaxUint64))
			if hi.Delay != ceiling {
				t.Errorf("lifetime %v attempt %d, highest draw: %v, want %v", tt.life, attempt, hi.Delay, ceiling)
			}
			if want := shortest + (ceiling-shortest+1)/2; renewal.NextRetry(cert, now, attempt, 0, constSource(1<<63)).Delay != want {
				t.Errorf("lifetime %v attempt %d, middle draw: want %v", tt.life, attempt, want)
			}
			if !strings.Contains(hi.Reason, "a random wait between") {
				t.Errorf("reason %q does not explain the backoff", hi.Reason)
			}
		}
	}
}

func TestNextRetryRandomSourceStaysInBoundsAndSpreads(t *testing.T) {
	src := rand.NewPCG(1, 2)
	for _, life := range []time.Duration{time.Minute, time.Hour, 7 * day, 90 * day} {
		cert := certFor(life)
		now := issued.Add(life / 3)
		shortest, longest := renewal.RetryBounds(life)
		for attempt := 1; attempt <= 30; attempt++ {
			ceiling := longest
			if f := float64(shortest) * math.Pow(2, float64(attempt)); f < float64(longest) {
				ceiling = time.Duration(f)
			}
			lo, hi, sum := time.Duration(math.MaxInt64), time.Duration(0), 0.0
			const n = 2000
			for range n {
				d := renewal.NextRetry(cert, now, attempt, 0, src).Delay
				if d < shortest || d > ceiling {
					t.Fatalf("lifetime %v attempt %d: %v outside [%v, %v]", life, attempt, d, shortest, ceiling)
				}
				lo, hi, sum = min(lo, d), max(hi, d), sum+float64(d)
			}
			// Full jitter: the waits cover the window, centred on its middle.
			span := float64(ceiling - shortest)
			if float64(lo-shortest) > 0.01*span || float64(ceiling-hi) > 0.01*span {
				t.Errorf("lifetime %v attempt %d: waits %v..%v do not cover [%v, %v]", life, attempt, lo, hi, shortest, ceiling)
			}
			if mid := float64(shortest) + span/2; math.Abs(sum/n-mid) > 0.05*span {
				t.Errorf("lifetime %v attempt %d: mean wait %v, want about %v", life, attempt, time.Duration(sum/n), time.Duration(mid))
			}
		}
	}
}

func TestNextRetryHugeAttempts(t *testing.T) {
	cert := certFor(30 * day)
	now := issued.Add(day)
	for _, attempt := range []int{63, 64, 65, math.MaxInt / 2, math.MaxInt, 0, -1, math.MinInt} {
		lowest := renewal.NextRetry(cert, now, attempt, 0, constSource(0)).Delay
		highest := renewal.NextRetry(cert, now, attempt, 0, constSource(math.MaxUint64)).Delay
		want := time.Hour
		if attempt < 1 { // counted as the first attempt
			want = 2 * time.Minute
		}
		if lowest != time.Minute || highest != want {
			t.Errorf("attempt %d: waits %v..%v, want 1m..%v", attempt, lowest, highest, want)
		}
	}
}

func TestNextRetryHonoursRetryAfter(t *testing.T) {
	cert := certFor(30 * day)
	now := issued.Add(day)
	highest := constSource(math.MaxUint64) // backoff alone would wait 2m on attempt 1
	tests := []struct {
		name       string
		now        time.Time
		retryAfter time.Duration
		want       time.Duration
		cloud      bool // whether the reason should credit the cloud
	}{
		{"longer than the backoff", now, 5 * time.Minute, 5 * time.Minute, true},
		{"longer than the longest wait", now, 3 * time.Hour, 3 * time.Hour, true},
		{"shorter than the backoff", now, 30 * time.Second, 2 * time.Minute, false},
		{"equal to the backoff", now, 2 * time.Minute, 2 * time.Minute, false},
		{"none", now, 0, 2 * time.Minute, false},
		{"negative is none", now, -time.Hour, 2 * time.Minute, false},
		{"in the last 5%, still longer", cert.NotAfter.Add(-time.Hour), 5 * time.Minute, 5 * time.Minute, true},
		{"after expiry, still longer", cert.NotAfter.Add(time.Hour), 5 * time.Minute, 5 * time.Minute, true},
	}
	for _, tt := range tests {
		r := renewal.NextRetry(cert, tt.now, 1, tt.retryAfter, highest)
		if r.Delay != tt.want {
			t.Errorf("%s: wait %v, want %v", tt.name, r.Delay, tt.want)
		}
		if got := strings.Contains(r.Reason, "the cloud asked to wait"); got != tt.cloud {
			t.Errorf("%s: reason %q; crediting the cloud = %v, want %v", tt.name, r.Reason, got, tt.cloud)
		}
	}
}

func TestNextRetryLastStretch(t *testing.T) {
	// In the last 5% of the lifetime (the last 36h of 30 days) and after expiry, every retry waits
	// the shortest time, whatever the attempt and the random draw.
	cert := certFor(30 * day)
	start := cert.NotAfter.Add(-36 * time.Hour)
	for _, now := range []time.Time{start, start.Add(time.Hour), cert.NotAfter, cert.NotAfter.Add(30 * day)} {
		for _, attempt := range []int{1, 5, 1000} {
			for _, u := range []uint64{0, 1 << 63, math.MaxUint64} {
				r := renewal.NextRetry(cert, now, attempt, 0, constSource(u))
				if r.Delay != time.Minute {
					t.Errorf("%v before expiry, attempt %d: wait %v, want 1m", cert.NotAfter.Sub(now), attempt, r.Delay)
				}
				if !strings.Contains(r.Reason, "last 5%") {
					t.Errorf("reason %q does not say why the wait is short", r.Reason)
				}
			}
		}
	}
	// A nanosecond earlier, backoff applies again.
	if r := renewal.NextRetry(cert, start.Add(-1), 10, 0, constSource(math.MaxUint64)); r.Delay != time.Hour {
		t.Errorf("just before the last 5%%: wait %v, want 1h", r.Delay)
	}
}

func TestNextRetryNeverCarriesPastExpiry(t *testing.T) {
	// The longest wait is 5% of the lifetime, the length of the last stretch, so a retry scheduled
	// before the last stretch always lands before expiry.
	for _, life := range []time.Duration{time.Minute, time.Hour, 7 * day} {
		cert := certFor(life)
		now := cert.NotAfter.Add(-life/20 - 1)
		r := renewal.NextRetry(cert, now, 100, 0, constSource(math.MaxUint64))
		if !now.Add(r.Delay).Before(cert.NotAfter) {
			t.Errorf("lifetime %v: retry at %v lands after expiry %v", life, now.Add(r.Delay), cert.NotAfter)
		}
	}
}

func TestNextRetryNilSourceIsRandom(t *testing.T) {
	// A nil source must still jitter: a fleet whose agents forgot the source must not retry in step.
	cert := certFor(30 * day)
	seen := map[time.Duration]bool{}
	for range 50 {
		d := renewal.NextRetry(cert, issued.Add(day), 6, 0, nil).Delay
		if d < time.Minute || d > time.Hour {
			t.Fatalf("nil source: wait %v outside [1m, 1h]", d)
		}
		seen[d] = true
	}
	if len(seen) < 40 {
		t.Errorf("nil source: only %d distinct waits in 50 tries", len(seen))
	}
}
