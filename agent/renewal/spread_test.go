package renewal_test

import (
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/dpsagent/dpsagent/agent/renewal"
)

func TestFleetSpread(t *testing.T) {
	// 10,000 devices get certificates in the same second and renew with the default policy. Their
	// renewals must spread over the jitter window rather than pile into a few minutes.
	//
	// A 7-day lifetime is the shortest Azure issues, so its 504-minute window carries the most
	// renewals per minute: about 20. An even spread then peaks well under three times the mean,
	// while a collapsed jitter, or a draw that ignored part of its input, would not. (Longer
	// lifetimes scale the same draws over a longer window; per-minute buckets holding one or two
	// renewals would measure chance rather than spread.)
	const (
		devices = 10000
		life    = 7 * day
		window  = life / 20
		minutes = int(window / time.Minute)
	)
	start := issued.Add(life*8/10 - window) // the window of a certificate issued at the start of the second

	perMinute := make([]int, minutes+1) // +1: issue times spread over a second shift the window by up to that
	lo, hi := window, time.Duration(0)
	for i := range devices {
		issuedAt := issued.Add(time.Duration(i%1000) * time.Millisecond)
		cert := renewal.Validity{NotBefore: issuedAt, NotAfter: issuedAt.Add(life)}
		seed := sha256.Sum256(fmt.Appendf(nil, "device %d seed", i))
		fingerprint := sha256.Sum256(fmt.Appendf(nil, "certificate for device %d", i))
		at := renewal.Next(cert, renewal.DefaultPolicy(), renewal.DrawFor(seed[:], fingerprint[:])).At

		threshold := issuedAt.Add(life * 8 / 10)
		if at.After(threshold) || !at.After(threshold.Add(-window)) {
			t.Fatalf("device %d renews at %v, outside its jitter window (%v, %v]", i, at, threshold.Add(-window), threshold)
		}
		lo, hi = min(lo, threshold.Sub(at)), max(hi, threshold.Sub(at))
		perMinute[at.Sub(start)/time.Minute]++
	}

	mean := float64(devices) / float64(minutes)
	peak, used := 0, 0
	for _, n := range perMinute {
		peak = max(peak, n)
		if n > 0 {
			used++
		}
	}
	t.Logf("%d devices over a %v window: peak %d renewals per minute, mean %.1f, peak/mean %.2f; %d of %d minutes used; jitter from %v to %v",
		devices, window, peak, mean, float64(peak)/mean, used, minutes, lo, hi)
	if float64(peak) > 3*mean {
		t.Errorf("peak %d renewals in one minute is more than 3× the mean %.1f", peak, mean)
	}
	if used < minutes*95/100 {
		t.Errorf("renewals fall in only %d of the window's %d minutes", used, minutes)
	}
	if lo > window/100 || hi < window*99/100 {
		t.Errorf("jitter spans %v..%v; want close to 0..%v", lo, hi, window)
	}
}
