package renewal

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// Retry is how long to wait after a failed renewal attempt, and why.
type Retry struct {
	Delay time.Duration
	// Reason says why, in plain language for `dpsagent status`.
	Reason string
}

// RetryBounds are the shortest and longest waits between renewal attempts for a certificate with
// this lifetime: min(1 minute, lifetime/100) and min(1 hour, lifetime/20). Tying them to the lifetime
// keeps a demonstration certificate of a few minutes retrying in seconds, and the longest wait below
// the last 5% of the lifetime, so backing off can never carry a device past expiry.
func RetryBounds(lifetime time.Duration) (shortest, longest time.Duration) {
	shortest = max(shortestWait, min(time.Minute, lifetime/100))
	longest = max(shortest, min(time.Hour, lifetime/20))
	return shortest, longest
}

// NextRetry says how long to wait after attempt (1 for the first failure) failed at now. The wait is
// exponential backoff with full jitter: uniform between the shortest wait and a ceiling that doubles
// with each attempt up to the longest (see [RetryBounds]), so a fleet that failed together does not
// retry together. In the last 5% of the lifetime, and after expiry, every retry uses the shortest
// wait: there is no time left to back off. A longer retryAfter from the cloud always wins; zero or
// negative means the cloud gave none.
//
// src supplies the randomness; nil uses math/rand/v2's goroutine-safe top-level source, never a
// fixed value, so a forgotten source cannot put a fleet in step.
func NextRetry(cert Validity, now time.Time, attempt int, retryAfter time.Duration, src rand.Source) Retry {
	life := cert.Lifetime()
	shortest, longest := RetryBounds(life)
	attempt = max(attempt, 1)
	var r Retry
	if inLastStretch(cert, now) {
		r = Retry{
			Delay: shortest,
			Reason: fmt.Sprintf("attempt %d failed in the last 5%% of the certificate's lifetime: retrying after the shortest wait, %s",
				attempt, human(shortest)),
		}
	} else {
		ceiling := backoffCeiling(shortest, longest, attempt)
		delay := shortest + scaleUniform(ceiling-shortest+1, uniformBits(src))
		r = Retry{
			Delay: delay,
			Reason: fmt.Sprintf("attempt %d failed: retrying in %s (a random wait between %s and %s)",
				attempt, human(delay), human(shortest), human(ceiling)),
		}
	}
	if retryAfter > r.Delay {
		r = Retry{
			Delay:  retryAfter,
			Reason: fmt.Sprintf("attempt %d failed: the cloud asked to wait %s before retrying", attempt, human(retryAfter)),
		}
	}
	return r
}

// inLastStretch reports whether now is in the last 5% of the certificate's lifetime or past it.
func inLastStretch(cert Validity, now time.Time) bool {
	life := cert.Lifetime()
	if life <= 0 {
		return true
	}
	return !now.Before(cert.NotAfter.Add(-life / 20))
}

// backoffCeiling is shortest × 2^attempt, capped at longest. It doubles step by step and stops at the
// cap, so any attempt number, however large, costs a few iterations and cannot overflow.
func backoffCeiling(shortest, longest time.Duration, attempt int) time.Duration {
	c := shortest
	for i := 0; i < attempt && c < longest; i++ {
		c *= 2
	}
	return min(c, longest)
}

func uniformBits(src rand.Source) uint64 {
	if src == nil {
		return rand.Uint64()
	}
	return src.Uint64()
}
