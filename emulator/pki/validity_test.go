package pki

import (
	"testing"
	"time"
)

func TestLeafValidity(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 700_000_000, time.UTC) // not on a whole second
	for _, tc := range []struct {
		name          string
		lifetime      time.Duration
		notBefore     time.Time
		wantNotBefore time.Time
	}{
		{"days: backdated a minute", 30 * 24 * time.Hour, time.Time{}, time.Date(2026, 6, 1, 11, 59, 0, 0, time.UTC)},
		{"ten minutes: a minute", 10 * time.Minute, time.Time{}, time.Date(2026, 6, 1, 11, 59, 0, 0, time.UTC)},
		{"five minutes: a tenth", 5 * time.Minute, time.Time{}, time.Date(2026, 6, 1, 11, 59, 30, 0, time.UTC)},
		{"20 seconds: 2 seconds", 20 * time.Second, time.Time{}, time.Date(2026, 6, 1, 11, 59, 58, 0, time.UTC)},
		{"one second: not backdated", time.Second, time.Time{}, time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)},
		{"override in the future", time.Hour, time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"override in the past", time.Hour, time.Date(2020, 1, 1, 0, 0, 0, 500, time.UTC), time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nb, na := leafValidity(now, tc.lifetime, tc.notBefore)
			if !nb.Equal(tc.wantNotBefore) {
				t.Errorf("NotBefore %s, want %s", nb, tc.wantNotBefore)
			}
			if got := na.Sub(nb); got != tc.lifetime {
				t.Errorf("validity spans %s, want the lifetime %s", got, tc.lifetime)
			}
			// Unless overridden, a certificate is usable on arrival and keeps
			// at least 90% of its lifetime (less under a second of rounding).
			if tc.notBefore.IsZero() {
				if nb.After(now) {
					t.Errorf("not yet valid when issued")
				}
				if left := na.Sub(now); left < tc.lifetime*9/10-time.Second {
					t.Errorf("only %s of %s left at issue", left, tc.lifetime)
				}
			}
		})
	}
}
