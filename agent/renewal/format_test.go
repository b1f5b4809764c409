package renewal

import (
	"math"
	"testing"
	"time"
)

func TestHuman(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{500 * time.Microsecond, "500µs"},
		{600 * time.Millisecond, "600ms"},
		{999600 * time.Microsecond, "1s"},
		{1500 * time.Millisecond, "1.5s"},
		{59960 * time.Millisecond, "1m"},
		{4*time.Minute + 30*time.Second, "4m30s"},
		{59*time.Minute + 59*time.Second + 600*time.Millisecond, "1h"},
		{72 * time.Minute, "1h12m"},
		{23*time.Hour + 59*time.Minute + 45*time.Second, "1d"},
		{31 * time.Hour, "1d7h"},
		{30 * day, "30d"},
		{-90 * time.Second, "-1m30s"},
		{math.MinInt64, "-106751d23h"},
		{math.MaxInt64, "106751d23h"},
	}
	for _, tt := range tests {
		if got := human(tt.d); got != tt.want {
			t.Errorf("human(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{7 * day, "7d"},
		{36 * time.Hour, "36h"},
		{90 * time.Minute, "1h30m"},
		{10 * time.Minute, "10m"},
		{time.Hour + 500*time.Millisecond, "1h0m0.5s"},
		{1, "1ns"},
		{0, "0s"},
		{-day, "-24h"},
	}
	for _, tt := range tests {
		if got := formatDuration(tt.d); got != tt.want {
			t.Errorf("formatDuration(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestFormatBP(t *testing.T) {
	for bp, want := range map[int]string{8000: "80%", 250: "2.5%", 6667: "66.67%", 5: "0.05%", 0: "0%", -150: "-1.5%"} {
		if got := formatBP(bp); got != want {
			t.Errorf("formatBP(%d) = %q, want %q", bp, got, want)
		}
	}
}

func TestLifetimePhrase(t *testing.T) {
	for d, want := range map[time.Duration]string{
		30 * day:                 "30-day",
		36 * time.Hour:           "36-hour",
		90 * time.Minute:         "90-minute",
		45 * time.Second:         "45-second",
		1500 * time.Millisecond:  "1.5s",
		day + 30*time.Minute + 1: "1d1h",
	} {
		if got := lifetimePhrase(d); got != want {
			t.Errorf("lifetimePhrase(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestShareIsExactOnLongLifetimes(t *testing.T) {
	// int64 arithmetic would overflow at lifetime × 10000 beyond about 10 days.
	for _, tt := range []struct {
		d    time.Duration
		bp   int
		want time.Duration
	}{
		{90 * day, 8000, 72 * day},
		{math.MaxInt64, 10000, math.MaxInt64},
		{math.MaxInt64, 5000, math.MaxInt64 / 2},
		{3, 3333, 0}, // floor
		{-day, 5000, 0},
	} {
		if got := share(tt.d, tt.bp); got != tt.want {
			t.Errorf("share(%v, %d) = %v, want %v", tt.d, tt.bp, got, tt.want)
		}
	}
}
