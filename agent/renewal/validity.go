package renewal

import (
	"math/bits"
	"time"
)

// Validity is the part of a certificate the schedule depends on: its validity period.
type Validity struct {
	NotBefore time.Time
	NotAfter  time.Time
}

// Lifetime is the length of the validity period. It is negative for a malformed certificate that
// ends before it starts, and saturates for certificates that run for centuries.
func (v Validity) Lifetime() time.Duration {
	return v.NotAfter.Sub(v.NotBefore)
}

// wholeBasisPoints is 100%, in the hundredths of a percent that policies are kept in.
const wholeBasisPoints = 10000

// share returns floor(d × bp / 10000) exactly. Float arithmetic would lose nanoseconds on long
// lifetimes and plain int64 arithmetic overflows past about 10 days, so it multiplies in 128 bits.
// bp must be within [0, 10000], which keeps the quotient within d.
func share(d time.Duration, bp int) time.Duration {
	if d <= 0 || bp <= 0 {
		return 0
	}
	hi, lo := bits.Mul64(uint64(d), uint64(bp))
	q, _ := bits.Div64(hi, lo, wholeBasisPoints)
	return time.Duration(q)
}

// scaleUniform maps u, uniform over all uint64 values, to floor(n × u / 2^64), uniform over [0, n).
// Using the high word of the product keeps every bit of u and is exact, so a test can pick u to land
// on a known value.
func scaleUniform(n time.Duration, u uint64) time.Duration {
	if n <= 0 {
		return 0
	}
	hi, _ := bits.Mul64(uint64(n), u)
	return time.Duration(hi)
}
