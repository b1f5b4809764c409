// Package renewal owns the certificate renewal schedule: when a certificate is due for renewal
// (threshold, per-device jitter, clamping to the validity period), how long to wait after a failed
// attempt (bounded exponential backoff, the cloud's retry-after), how often to look again, and
// whether the clock can be trusted enough to decide anything at all. It also parses the renewal
// settings of the configuration.
//
// Everything here is arithmetic over values the caller passes in: no I/O, no goroutines, no reading
// of the clock and no mutable package state. Randomness comes from the caller too, so a test, the
// agent and a fleet simulation get the same answer for the same inputs.
//
// The agent calls [Decide] at every check, with the wall clock, and acts on the [Decision]. The
// renewal time does not depend on when the check runs, so rechecking as often as needed (gateways
// sleep and clocks jump) never moves it.
package renewal
