package renewal

import (
	"errors"
	"fmt"
	"time"
)

// Action is what the agent should do after a check.
type Action int

const (
	// WaitForClock: the clock is not trustworthy yet, so no expiry or renewal decision is taken.
	// The agent waits for time synchronisation and says so in its status.
	WaitForClock Action = iota + 1
	// Wait: the certificate is not due; check again after Decision.RecheckIn.
	Wait
	// Renew: renewal is due and the certificate is still valid, so the IoT Hub credential API can
	// be tried first.
	Renew
	// RenewViaDPS: the certificate has expired, so the hub will refuse it; renew by registering
	// with DPS using the onboarding credential.
	RenewViaDPS
)

// String is the action as `dpsagent status` shows it.
func (a Action) String() string {
	switch a {
	case WaitForClock:
		return "waiting for clock"
	case Wait:
		return "waiting"
	case Renew:
		return "renew now"
	case RenewViaDPS:
		return "expired: renew via DPS"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Decision is the outcome of one check.
type Decision struct {
	Action Action
	// At is when the certificate is due for renewal (see [Schedule.At]). It is filled in for every
	// action, waiting for the clock included, because it does not depend on the clock.
	At time.Time
	// RecheckIn is how long to wait before the next check. It is a duration, not a time, so a
	// monotonic timer can run it while the wall clock jumps. Zero for Renew and RenewViaDPS: act
	// now, then check again.
	RecheckIn time.Duration
	// Reason says why, in plain language for `dpsagent status`.
	Reason string
}

// clockRecheck is how often to look again while waiting for the clock: time synchronisation can
// arrive at any moment after boot, and the agent should notice within seconds, not at the next
// ten-minute check.
const clockRecheck = 10 * time.Second

// Decide says what to do about a certificate at now: wait, renew, renew via DPS because it has
// expired, or nothing at all because the clock is not set (see [CheckClock]; built is the build
// date, and a zero built skips that part of the check). draw places this certificate in the jitter
// window and must be the same at every check (see [Draw]).
//
// The certificate is valid through NotAfter inclusive, as X.509 has it; expired means after it.
func Decide(cert Validity, now time.Time, p Policy, draw Draw, built time.Time) Decision {
	s := Next(cert, p, draw)
	check := CheckInterval(cert.Lifetime())
	if err := CheckClock(now, built, cert); err != nil {
		recheck := min(check, clockRecheck)
		// A certificate a few seconds ahead of our clock (the issuer's clock is ahead) becomes
		// valid soon; look again right then.
		if untilValid := cert.NotBefore.Sub(now); untilValid > 0 && !now.Before(built) {
			recheck = min(recheck, untilValid)
		}
		return Decision{Action: WaitForClock, At: s.At, RecheckIn: recheck, Reason: err.Error()}
	}
	switch {
	case now.After(cert.NotAfter):
		return Decision{
			Action: RenewViaDPS,
			At:     s.At,
			Reason: fmt.Sprintf("the certificate expired %s ago (%s), so the hub will refuse it: renewing through DPS",
				human(now.Sub(cert.NotAfter)), formatTime(cert.NotAfter)),
		}
	case !now.Before(s.At):
		return Decision{Action: Renew, At: s.At, Reason: dueReason(now.Sub(s.At), s.Reason)}
	}
	return Decision{Action: Wait, At: s.At, RecheckIn: min(s.At.Sub(now), check), Reason: s.Reason}
}

func dueReason(late time.Duration, schedule string) string {
	if late == 0 {
		return "renewal is due now: " + schedule
	}
	return fmt.Sprintf("renewal was due %s ago: %s", human(late), schedule)
}

// ErrClockNotSet is returned by [CheckClock] when the clock cannot be trusted yet.
var ErrClockNotSet = errors.New("clock not set: waiting for time synchronisation")

// CheckClock says whether the clock can be trusted for renewal decisions. A clock earlier than the
// build date (boards without a real-time clock boot in 1970) or than the certificate's NotBefore is
// taken as not set: deciding on it would see a valid certificate as expired, or not yet valid, and
// act on that. The error wraps [ErrClockNotSet] and says which test failed. A zero built skips the
// build-date test.
func CheckClock(now, built time.Time, cert Validity) error {
	if now.Before(built) {
		return fmt.Errorf("the clock reads %s, earlier than this build (%s): %w",
			formatTime(now), formatTime(built), ErrClockNotSet)
	}
	if now.Before(cert.NotBefore) {
		return fmt.Errorf("the clock reads %s, earlier than the certificate's start (%s): %w",
			formatTime(now), formatTime(cert.NotBefore), ErrClockNotSet)
	}
	return nil
}

// CheckInterval is the longest the agent may go between checks of a certificate with this lifetime:
// min(10 minutes, lifetime/20). The schedule is recomputed at every check rather than trusted to one
// long timer, because gateways sleep and timers do not run while they do.
func CheckInterval(lifetime time.Duration) time.Duration {
	return max(shortestWait, min(10*time.Minute, lifetime/20))
}

// shortestWait keeps a malformed or absurdly short certificate from turning a wait into a busy loop.
// It is below the waits of any real lifetime (a one-minute demonstration certificate retries after
// 600ms), so it changes nothing else.
const shortestWait = 100 * time.Millisecond
