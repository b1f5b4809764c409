package hub

import (
	"testing"
	"time"
)

func TestBackoffDelay(t *testing.T) {
	fixed := func(r float64) func() float64 { return func() float64 { return r } }
	for _, tc := range []struct {
		failures int
		random   float64
		want     time.Duration
	}{
		{0, 0, 0},
		{0, 0.5, 500 * time.Millisecond},
		{1, 0.5, time.Second},
		{3, 0.999, 7992 * time.Millisecond},
		{8, 1 - 1e-9, 256*time.Second - 256*time.Nanosecond},
		{9, 0.5, 150 * time.Second}, // capped at 5 min
		{40, 0.5, 150 * time.Second},
		{1000, 0.5, 150 * time.Second},
		{2, 1.5, 2 * time.Second}, // a broken source falls back to the middle
		{2, -1, 2 * time.Second},
	} {
		if got := backoffDelay(tc.failures, fixed(tc.random)); got != tc.want {
			t.Errorf("backoffDelay(%d, %v) = %s, want %s", tc.failures, tc.random, got, tc.want)
		}
	}
}

func TestSASRefreshDelay(t *testing.T) {
	if got := sasRefreshDelay(time.Hour); got != 48*time.Minute {
		t.Errorf("sasRefreshDelay(1h) = %s, want 48m (80%%, as the C SDK)", got)
	}
}
