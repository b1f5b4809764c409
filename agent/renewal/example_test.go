package renewal_test

import (
	"crypto/sha256"
	"fmt"
	"time"

	"github.com/dpsagent/dpsagent/agent/renewal"
)

func ExampleDecide() {
	policy, err := renewal.ParsePolicy("80%", "5%")
	if err != nil {
		fmt.Println(err)
		return
	}
	issued := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	cert := renewal.Validity{NotBefore: issued, NotAfter: issued.Add(30 * 24 * time.Hour)}
	built := time.Date(2025, 1, 15, 0, 0, 0, 0, time.UTC)

	// Once per certificate: the device's secret and the certificate's fingerprint fix its place in
	// the jitter window, so every check agrees on the renewal time.
	fingerprint := sha256.Sum256([]byte("the certificate's DER bytes"))
	draw := renewal.DrawFor([]byte("this device's secret seed"), fingerprint[:])

	for _, now := range []time.Time{
		time.Date(1970, 1, 1, 0, 0, 42, 0, time.UTC), // just booted, no RTC
		issued.Add(24 * time.Hour),
		issued.Add(29 * 24 * time.Hour),
		issued.Add(31 * 24 * time.Hour),
	} {
		d := renewal.Decide(cert, now, policy, draw, built)
		fmt.Printf("%s: %s\n  renewal at %s; %s\n", d.Action, d.Reason, d.At.Format(time.RFC3339), recheck(d))
	}
	// Output:
	// waiting for clock: the clock reads 1970-01-01T00:00:42Z, earlier than this build (2025-01-15T00:00:00Z): clock not set: waiting for time synchronisation
	//   renewal at 2025-03-24T07:09:45Z; check again in 10s
	// waiting: 80% of the certificate's 30-day lifetime, less 1d5h jitter
	//   renewal at 2025-03-24T07:09:45Z; check again in 10m0s
	// renew now: renewal was due 6d5h ago: 80% of the certificate's 30-day lifetime, less 1d5h jitter
	//   renewal at 2025-03-24T07:09:45Z; act now
	// expired: renew via DPS: the certificate expired 1d ago (2025-03-31T12:00:00Z), so the hub will refuse it: renewing through DPS
	//   renewal at 2025-03-24T07:09:45Z; act now
}

func recheck(d renewal.Decision) string {
	if d.RecheckIn == 0 {
		return "act now"
	}
	return "check again in " + d.RecheckIn.String()
}
