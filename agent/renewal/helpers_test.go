package renewal_test

import (
	"math"
	"testing"
	"time"

	"github.com/dpsagent/dpsagent/agent/renewal"
)

const day = 24 * time.Hour

var (
	// issued is when the test certificates start; built is an earlier build date.
	issued = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	built  = time.Date(2025, 1, 15, 0, 0, 0, 0, time.UTC)
)

// certFor is a certificate issued at the test's issuance time with the given lifetime.
func certFor(life time.Duration) renewal.Validity {
	return renewal.Validity{NotBefore: issued, NotAfter: issued.Add(life)}
}

func mustThreshold(t testing.TB, s string) renewal.Threshold {
	t.Helper()
	th, err := renewal.ParseThreshold(s)
	if err != nil {
		t.Fatalf("ParseThreshold(%q): %v", s, err)
	}
	return th
}

func mustJitter(t testing.TB, s string) renewal.Jitter {
	t.Helper()
	j, err := renewal.ParseJitter(s)
	if err != nil {
		t.Fatalf("ParseJitter(%q): %v", s, err)
	}
	return j
}

func policy(t testing.TB, threshold, jitter string) renewal.Policy {
	t.Helper()
	return renewal.Policy{Threshold: mustThreshold(t, threshold), Jitter: mustJitter(t, jitter)}
}

// constSource is a random source that always returns the same value, so a test knows exactly where
// in the backoff window a wait lands.
type constSource uint64

func (c constSource) Uint64() uint64 { return uint64(c) }

const (
	drawLowest  = renewal.Draw(0)
	drawHalf    = renewal.Draw(1 << 63)
	drawHighest = renewal.Draw(math.MaxUint64)
)
