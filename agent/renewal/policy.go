package renewal

import (
	"fmt"
	"math"
	"time"
)

// The renewal policy's defaults and limits, in basis points (hundredths of a percent) so that values
// such as "2.5%" stay exact.
const (
	// defaultThresholdBP follows Microsoft's recommendation to renew at 80% of the lifetime.
	defaultThresholdBP = 8000
	// defaultJitterBP spreads a fleet issued at the same moment over 5% of the lifetime.
	defaultJitterBP = 500

	minThresholdBP = 100
	maxThresholdBP = 9900
	maxJitterBP    = 5000
)

// Threshold says when in a certificate's life it becomes due for renewal, before jitter: either a
// share of the lifetime ("80%") or a time before expiry ("7d"). The zero value is the default, 80%.
type Threshold struct {
	bp           int           // share of the lifetime; used when beforeExpiry is zero
	beforeExpiry time.Duration // time before NotAfter; positive when set
}

// ThresholdPercent is a threshold at pct percent of the lifetime, between 1 and 99 (up to two decimals).
func ThresholdPercent(pct float64) (Threshold, error) {
	bp, err := percentToBP(pct)
	if err == nil && (bp < minThresholdBP || bp > maxThresholdBP) {
		err = errThresholdRange
	}
	if err != nil {
		return Threshold{}, fmt.Errorf("threshold %g%%: %w", pct, err)
	}
	return Threshold{bp: bp}, nil
}

// ThresholdBeforeExpiry is a threshold at d before the certificate expires; d must be positive.
func ThresholdBeforeExpiry(d time.Duration) (Threshold, error) {
	if d <= 0 {
		return Threshold{}, fmt.Errorf("threshold %s: %w", formatDuration(d), errThresholdNotPositive)
	}
	return Threshold{beforeExpiry: d}, nil
}

// BeforeExpiry reports the time before expiry, and whether the threshold is expressed that way
// rather than as a share of the lifetime.
func (t Threshold) BeforeExpiry() (time.Duration, bool) {
	return t.beforeExpiry, t.beforeExpiry > 0
}

// shareBP is the threshold's share of the lifetime in basis points, resolving the zero value.
func (t Threshold) shareBP() int {
	if t.bp == 0 {
		return defaultThresholdBP
	}
	return t.bp
}

// String is the threshold as the configuration writes it: "80%", "66.67%", "7d", "36h", "1h30m".
func (t Threshold) String() string {
	if d, ok := t.BeforeExpiry(); ok {
		return formatDuration(d)
	}
	return formatBP(t.shareBP())
}

// MarshalText writes the threshold as [Threshold.String] does, so configuration round-trips.
func (t Threshold) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText reads the threshold as [ParseThreshold] does, so configuration decoders can fill it.
func (t *Threshold) UnmarshalText(text []byte) error {
	v, err := ParseThreshold(string(text))
	if err != nil {
		return err
	}
	*t = v
	return nil
}

// Jitter is the largest share of the lifetime by which a device renews before the threshold; each
// certificate's [Draw] picks where in that window it falls. The zero value is the default, 5%.
type Jitter struct {
	bp  int
	set bool // tells an explicit 0% apart from the zero value
}

// JitterPercent is a jitter of pct percent of the lifetime, between 0 and 50 (up to two decimals).
func JitterPercent(pct float64) (Jitter, error) {
	bp, err := percentToBP(pct)
	if err == nil && (bp < 0 || bp > maxJitterBP) {
		err = errJitterRange
	}
	if err != nil {
		return Jitter{}, fmt.Errorf("jitter %g%%: %w", pct, err)
	}
	return Jitter{bp: bp, set: true}, nil
}

// shareBP is the jitter's share of the lifetime in basis points, resolving the zero value.
func (j Jitter) shareBP() int {
	if !j.set {
		return defaultJitterBP
	}
	return j.bp
}

// String is the jitter as the configuration writes it: "5%", "2.5%".
func (j Jitter) String() string { return formatBP(j.shareBP()) }

// MarshalText writes the jitter as [Jitter.String] does, so configuration round-trips.
func (j Jitter) MarshalText() ([]byte, error) { return []byte(j.String()), nil }

// UnmarshalText reads the jitter as [ParseJitter] does, so configuration decoders can fill it.
func (j *Jitter) UnmarshalText(text []byte) error {
	v, err := ParseJitter(string(text))
	if err != nil {
		return err
	}
	*j = v
	return nil
}

// amount is how much earlier than the threshold this certificate renews: uniform over
// [0, jitter × lifetime) as draw ranges over all its values.
func (j Jitter) amount(lifetime time.Duration, draw Draw) time.Duration {
	return scaleUniform(share(lifetime, j.shareBP()), uint64(draw))
}

// Policy is the renewal configuration. The zero value is [DefaultPolicy].
type Policy struct {
	Threshold Threshold
	Jitter    Jitter
}

// DefaultPolicy renews at 80% of the lifetime, less up to 5% jitter.
func DefaultPolicy() Policy {
	return Policy{
		Threshold: Threshold{bp: defaultThresholdBP},
		Jitter:    Jitter{bp: defaultJitterBP, set: true},
	}
}

// Validate checks what no single setting can: a jitter at least as large as a percentage threshold
// would put some devices' renewal at the moment their certificate is issued, so they would renew
// again and again. (A threshold before expiry depends on the lifetime and is clamped instead; see
// [Next].)
func (p Policy) Validate() error {
	if _, ok := p.Threshold.BeforeExpiry(); ok {
		return nil
	}
	if p.Jitter.shareBP() >= p.Threshold.shareBP() {
		return fmt.Errorf("jitter %s is not smaller than threshold %s: some devices would renew as soon as they get a certificate; lower the jitter (such as \"5%%\") or raise the threshold (such as \"80%%\")",
			p.Jitter, p.Threshold)
	}
	return nil
}

// String describes the policy for logs: "threshold 80%, jitter 5%".
func (p Policy) String() string {
	return fmt.Sprintf("threshold %s, jitter %s", p.Threshold, p.Jitter)
}

// percentToBP converts a percentage to basis points, refusing what the configuration could not
// express: NaN, infinities, and precision finer than two decimals.
func percentToBP(pct float64) (int, error) {
	if math.IsNaN(pct) || math.IsInf(pct, 0) || math.Abs(pct) > 1e6 {
		return 0, errPercentSyntax
	}
	bp := math.Round(pct * 100)
	if math.Abs(bp-pct*100) > 1e-6 {
		return 0, errPercentDecimals
	}
	return int(bp), nil
}
