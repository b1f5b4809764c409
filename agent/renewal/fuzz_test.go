package renewal_test

import (
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dpsagent/dpsagent/agent/renewal"
)

// fuzzPolicy maps arbitrary numbers onto a policy the configuration could hold, without validating
// the combination: Decide must cope with what Validate would refuse.
func fuzzPolicy(t *testing.T, thresholdBP, beforeExpiry int64, jitterBP uint16) renewal.Policy {
	var th renewal.Threshold
	var err error
	if beforeExpiry > 0 {
		th, err = renewal.ThresholdBeforeExpiry(time.Duration(beforeExpiry))
	} else {
		th, err = renewal.ThresholdPercent(float64(100+uint64(thresholdBP)%9801) / 100)
	}
	if err != nil {
		t.Fatalf("building the threshold: %v", err)
	}
	j, err := renewal.JitterPercent(float64(jitterBP%5001) / 100)
	if err != nil {
		t.Fatalf("building the jitter: %v", err)
	}
	return renewal.Policy{Threshold: th, Jitter: j}
}

// fuzzTime maps any int64 to a time within about 300 years of 1970, so time arithmetic stays in range.
func fuzzTime(sec int64) time.Time {
	return time.Unix(sec%10_000_000_000, 0).UTC()
}

func FuzzDecide(f *testing.F) {
	f.Add(int64(1740830400), int64(30*day), int64(25*day), uint64(1<<63), int64(8000), int64(0), uint16(500), int64(-day))
	f.Add(int64(1740830400), int64(time.Minute), int64(50*time.Second), uint64(math.MaxUint64), int64(8000), int64(0), uint16(500), int64(0))
	f.Add(int64(1740830400), int64(7*day), int64(-time.Hour), uint64(0), int64(0), int64(7*day), uint16(5000), int64(-day))
	f.Add(int64(1740830400), int64(2*day), int64(3*day), uint64(12345), int64(0), int64(36*time.Hour), uint16(0), int64(day))
	f.Add(int64(0), int64(0), int64(0), uint64(0), int64(0), int64(0), uint16(0), int64(0))
	f.Add(int64(1740830400), int64(-time.Hour), int64(time.Minute), uint64(7), int64(100), int64(0), uint16(5000), int64(0))
	f.Fuzz(func(t *testing.T, nbSec, life, nowOffset int64, draw uint64, thresholdBP, beforeExpiry int64, jitterBP uint16, builtOffset int64) {
		cert := renewal.Validity{NotBefore: fuzzTime(nbSec)}
		cert.NotAfter = cert.NotBefore.Add(time.Duration(life))
		now := cert.NotBefore.Add(time.Duration(nowOffset))
		builtAt := cert.NotBefore.Add(time.Duration(builtOffset))
		p := fuzzPolicy(t, thresholdBP, beforeExpiry, jitterBP)

		d := renewal.Decide(cert, now, p, renewal.Draw(draw), builtAt)

		// The renewal time is inside the validity period, and does not depend on when we look.
		if life >= 0 && (d.At.Before(cert.NotBefore) || d.At.After(cert.NotAfter)) {
			t.Fatalf("At %v outside [%v, %v]", d.At, cert.NotBefore, cert.NotAfter)
		}
		for _, other := range []time.Time{cert.NotBefore, now.Add(time.Hour), now.Add(-37 * day), time.Unix(0, 0)} {
			if o := renewal.Decide(cert, other, p, renewal.Draw(draw), builtAt); !o.At.Equal(d.At) {
				t.Fatalf("At moved from %v to %v when checked at %v instead of %v", d.At, o.At, other, now)
			}
		}
		if d.Reason == "" {
			t.Fatal("no reason given")
		}

		clockSet := !now.Before(builtAt) && !now.Before(cert.NotBefore)
		var want renewal.Action
		switch {
		case !clockSet:
			want = renewal.WaitForClock
		case now.After(cert.NotAfter):
			want = renewal.RenewViaDPS
		case !now.Before(d.At):
			want = renewal.Renew
		default:
			want = renewal.Wait
		}
		if d.Action != want {
			t.Fatalf("action %v, want %v (now %v, At %v, NotAfter %v): %s", d.Action, want, now, d.At, cert.NotAfter, d.Reason)
		}

		check := renewal.CheckInterval(cert.Lifetime())
		switch d.Action {
		case renewal.Wait:
			if d.RecheckIn <= 0 || d.RecheckIn > check || d.RecheckIn > d.At.Sub(now) {
				t.Fatalf("wait: recheck in %v; want in (0, min(%v, %v)]", d.RecheckIn, check, d.At.Sub(now))
			}
		case renewal.WaitForClock:
			if d.RecheckIn <= 0 || d.RecheckIn > min(check, 10*time.Second) {
				t.Fatalf("waiting for clock: recheck in %v", d.RecheckIn)
			}
		default:
			if d.RecheckIn != 0 {
				t.Fatalf("%v: recheck in %v, want 0 (act now)", d.Action, d.RecheckIn)
			}
		}
	})
}

func FuzzNextRetry(f *testing.F) {
	f.Add(int64(30*day), int64(day), 1, int64(0), uint64(0))
	f.Add(int64(30*day), int64(29*day), 7, int64(5*time.Minute), uint64(math.MaxUint64))
	f.Add(int64(time.Minute), int64(10*time.Second), 3, int64(0), uint64(1<<63))
	f.Add(int64(7*day), int64(8*day), math.MaxInt, int64(-1), uint64(42))
	f.Add(int64(0), int64(0), 0, int64(0), uint64(0))
	f.Add(int64(math.MaxInt64), int64(math.MinInt64), math.MinInt, int64(math.MaxInt64), uint64(1))
	f.Fuzz(func(t *testing.T, life, nowOffset int64, attempt int, retryAfter int64, u uint64) {
		cert := renewal.Validity{NotBefore: issued, NotAfter: issued.Add(time.Duration(life))}
		now := issued.Add(time.Duration(nowOffset))
		r := renewal.NextRetry(cert, now, attempt, time.Duration(retryAfter), constSource(u))

		shortest, longest := renewal.RetryBounds(cert.Lifetime())
		if shortest <= 0 || shortest > longest || longest > time.Hour {
			t.Fatalf("bounds %v, %v for lifetime %v", shortest, longest, cert.Lifetime())
		}
		lastStretch := life <= 0 || !now.Before(cert.NotAfter.Add(-cert.Lifetime()/20))
		ceiling := longest
		if a := max(attempt, 1); a < 64 {
			if c := float64(shortest) * math.Pow(2, float64(a)); c < float64(longest) {
				ceiling = time.Duration(c)
			}
		}
		backoffLo, backoffHi := shortest, ceiling
		if lastStretch {
			backoffHi = shortest
		}
		switch {
		case time.Duration(retryAfter) > backoffHi:
			// The cloud's wait is longer than any backoff could be: it wins outright.
			if r.Delay != time.Duration(retryAfter) {
				t.Fatalf("retry-after %v: wait %v", time.Duration(retryAfter), r.Delay)
			}
		case r.Delay < max(backoffLo, time.Duration(retryAfter)) || r.Delay > backoffHi:
			t.Fatalf("wait %v outside [%v, %v] (retry-after %v, last stretch %v)", r.Delay, backoffLo, backoffHi, time.Duration(retryAfter), lastStretch)
		}
		if r.Reason == "" {
			t.Fatal("no reason given")
		}
		// Backing off never carries a device from before the last stretch past expiry.
		if !lastStretch && retryAfter <= 0 && life >= int64(2*time.Second) && now.Add(r.Delay).After(cert.NotAfter) {
			t.Fatalf("retry at %v lands after expiry %v", now.Add(r.Delay), cert.NotAfter)
		}
	})
}

func FuzzParseThreshold(f *testing.F) {
	for _, s := range []string{"80%", "66.67%", "7d", "36h", "90m", "1.5d", "1d12h", "", "0%", "-7d", "1e9d", "%", "7µs", "1..5d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		th, err := renewal.ParseThreshold(s)
		if err != nil {
			// The error names the value as given, and shows a valid form.
			if msg := err.Error(); !strings.HasPrefix(msg, "threshold "+strconv.Quote(s)+": ") || !strings.Contains(msg, "such as") && !strings.Contains(msg, "too long") {
				t.Fatalf("ParseThreshold(%q): unhelpful error %q", s, msg)
			}
			return
		}
		if d, ok := th.BeforeExpiry(); ok && d <= 0 {
			t.Fatalf("ParseThreshold(%q) = a non-positive time before expiry %v", s, d)
		}
		again, err := renewal.ParseThreshold(th.String())
		if err != nil || again != th {
			t.Fatalf("ParseThreshold(%q) = %v, which reads back as %v, %v", s, th, again, err)
		}
	})
}

func FuzzParseJitter(f *testing.F) {
	for _, s := range []string{"5%", "0%", "2.5%", "50%", "50.01%", "", "5", "-0%", "00000000000000000001%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		j, err := renewal.ParseJitter(s)
		if err != nil {
			if msg := err.Error(); !strings.HasPrefix(msg, "jitter "+strconv.Quote(s)+": ") || !strings.Contains(msg, "such as") {
				t.Fatalf("ParseJitter(%q): unhelpful error %q", s, msg)
			}
			return
		}
		again, err := renewal.ParseJitter(j.String())
		if err != nil || again != j {
			t.Fatalf("ParseJitter(%q) = %v, which reads back as %v, %v", s, j, again, err)
		}
		// Whatever it parsed, the policy keeps every renewal inside the validity period.
		cert := certFor(7 * day)
		if at := renewal.Next(cert, renewal.Policy{Jitter: j}, drawHighest).At; at.Before(cert.NotBefore) || at.After(cert.NotAfter) {
			t.Fatalf("jitter %v: renewal at %v outside the validity period", j, at)
		}
	})
}
