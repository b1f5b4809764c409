package renewal

import (
	"fmt"
	"time"
)

// beforeExpiryFloorBP is the earliest point, as a share of the lifetime, that a threshold given as a
// time before expiry may reach. The margin is written once ("7d") but lifetimes are the issuer's
// choice: on a certificate shorter than the margin it would ask for renewal the moment each new
// certificate arrives, forever. Holding it to half the lifetime means at most two renewals per
// certificate whatever the issuer does; a share of the lifetime ("30%") can still go lower on purpose.
const beforeExpiryFloorBP = 5000

// Schedule is when a certificate is due for renewal, and why.
type Schedule struct {
	// At is when renewal is due: the threshold less this certificate's jitter, never before
	// NotBefore nor after NotAfter. It depends only on the certificate, the policy and the draw.
	At time.Time
	// Jitter is how much earlier than the threshold this certificate renews.
	Jitter time.Duration
	// Reason explains At in plain language for `dpsagent status`, such as
	// "80% of the certificate's 30-day lifetime, less 1h12m jitter".
	Reason string
}

// Next computes when a certificate is due for renewal. It does not look at the clock, so every check
// for the same certificate gets the same answer.
func Next(cert Validity, p Policy, draw Draw) Schedule {
	life := cert.Lifetime()
	if life <= 0 {
		return Schedule{At: cert.NotAfter, Reason: "the certificate has no validity period (NotAfter is not after NotBefore)"}
	}
	point, reason := thresholdPoint(cert, p.Threshold)
	jitter := p.Jitter.amount(life, draw)
	at := point.Add(-jitter)
	if jitter > 0 {
		reason += ", less " + human(jitter) + " jitter"
	}
	// Valid policies keep At inside the validity period; these hold the promise for any input.
	switch {
	case at.Before(cert.NotBefore):
		at = cert.NotBefore
		reason += "; that is before the certificate is valid, so as soon as it is"
	case at.After(cert.NotAfter):
		at = cert.NotAfter
		reason += "; that is after the certificate expires, so at expiry"
	}
	return Schedule{At: at, Jitter: jitter, Reason: reason}
}

// thresholdPoint is when the threshold falls on this certificate, before jitter, and how to say so.
func thresholdPoint(cert Validity, t Threshold) (time.Time, string) {
	life := cert.Lifetime()
	margin, ok := t.BeforeExpiry()
	if !ok {
		return cert.NotBefore.Add(share(life, t.shareBP())),
			fmt.Sprintf("%s of the certificate's %s lifetime", formatBP(t.shareBP()), lifetimePhrase(life))
	}
	floor := share(life, beforeExpiryFloorBP)
	if margin > life-floor {
		return cert.NotBefore.Add(floor),
			fmt.Sprintf("%s of the certificate's %s lifetime, since %s before expiry would come earlier than that",
				formatBP(beforeExpiryFloorBP), lifetimePhrase(life), formatDuration(margin))
	}
	return cert.NotAfter.Add(-margin),
		fmt.Sprintf("%s before the end of the certificate's %s lifetime", formatDuration(margin), lifetimePhrase(life))
}
