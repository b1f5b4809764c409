package hub

import "time"

// Reconnect backoff: exponential from 1 s, capped at 5 minutes, with full
// jitter, so a fleet that lost its hub at the same moment does not come back
// in step (reference §3: back off exponentially with jitter, min 1 s).
const (
	backoffBase = time.Second
	backoffMax  = 5 * time.Minute
)

// stableConnection is how long a connection must last before the backoff
// starts again from the bottom: a hub that accepts and then drops a device
// at once (another connection with the same ID, a policy) must not be
// hammered in a tight loop.
const stableConnection = time.Minute

// backoffDelay is the wait before reconnect attempt number failures (0 for
// the first retry): uniform in [0, min(backoffMax, backoffBase·2^failures)),
// drawn with random, which returns a number in [0, 1).
func backoffDelay(failures int, random func() float64) time.Duration {
	ceiling := backoffMax
	if failures < 30 { // beyond that the shift overflows; the cap applies anyway
		ceiling = min(backoffMax, backoffBase<<failures)
	}
	r := random()
	if r < 0 || r >= 1 { // a broken source must not stall or spin the loop
		r = 0.5
	}
	return time.Duration(r * float64(ceiling))
}

// sasRefreshDelay is when, after a SAS token was made, to reconnect with a
// fresh one: at 80% of its lifetime, as azure-iot-sdk-c does
// (SAS_REFRESH_MULTIPLIER), leaving the rest as margin for the reconnect and
// for clock skew.
func sasRefreshDelay(lifetime time.Duration) time.Duration {
	return lifetime * 8 / 10
}
