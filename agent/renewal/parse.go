package renewal

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// policyError is a fixed problem with a renewal setting. Being a string type, its values can be
// constants rather than package variables.
type policyError string

func (e policyError) Error() string { return string(e) }

const (
	errThresholdSyntax      policyError = `not a share of the lifetime such as "80%" or a time before expiry such as "7d", "36h" or "90m"`
	errThresholdRange       policyError = `out of range: use 1% to 99% of the lifetime, such as "80%"`
	errThresholdNotPositive policyError = `a time before expiry must be positive, such as "7d", "36h" or "90m"`
	errJitterSyntax         policyError = `not a share of the lifetime such as "5%" or "2.5%"`
	errJitterRange          policyError = `out of range: use 0% to 50% of the lifetime, such as "5%"`
	errPercentSyntax        policyError = `not a percentage such as "80%" or "2.5%"`
	errPercentDecimals      policyError = `use at most two decimal places, such as "2.5%" or "66.67%"`
	errDurationTooLong      policyError = `too long: durations must be under about 290 years`
)

// ParseThreshold reads a threshold as the configuration writes it: a share of the lifetime ("80%",
// "66.67%", from 1% to 99%) or a time before expiry ("7d", "36h", "90m", "1d12h"; Go durations plus
// "d" for days; positive).
func ParseThreshold(s string) (Threshold, error) {
	t, err := parseThreshold(strings.TrimSpace(s))
	if err != nil {
		return Threshold{}, fmt.Errorf("threshold %q: %w", s, err)
	}
	return t, nil
}

func parseThreshold(s string) (Threshold, error) {
	if strings.HasSuffix(s, "%") {
		bp, err := parsePercent(s)
		if err != nil {
			return Threshold{}, err
		}
		if bp < minThresholdBP || bp > maxThresholdBP {
			return Threshold{}, errThresholdRange
		}
		return Threshold{bp: bp}, nil
	}
	d, err := parseDuration(s)
	if err != nil {
		return Threshold{}, fmt.Errorf("%w (%w)", errThresholdSyntax, err)
	}
	if d <= 0 {
		return Threshold{}, errThresholdNotPositive
	}
	return Threshold{beforeExpiry: d}, nil
}

// ParseJitter reads a jitter as the configuration writes it: a share of the lifetime from 0% to 50%
// ("5%", "2.5%").
func ParseJitter(s string) (Jitter, error) {
	j, err := parseJitter(strings.TrimSpace(s))
	if err != nil {
		return Jitter{}, fmt.Errorf("jitter %q: %w", s, err)
	}
	return j, nil
}

func parseJitter(s string) (Jitter, error) {
	if !strings.HasSuffix(s, "%") {
		return Jitter{}, errJitterSyntax
	}
	bp, err := parsePercent(s)
	if err != nil {
		return Jitter{}, err
	}
	if bp < 0 || bp > maxJitterBP {
		return Jitter{}, errJitterRange
	}
	return Jitter{bp: bp, set: true}, nil
}

// ParsePolicy reads both renewal settings and checks them together (see [Policy.Validate]). An empty
// string leaves that setting at its default, since the configuration may omit either key.
func ParsePolicy(threshold, jitter string) (Policy, error) {
	p := DefaultPolicy()
	var err error
	if strings.TrimSpace(threshold) != "" {
		if p.Threshold, err = ParseThreshold(threshold); err != nil {
			return Policy{}, err
		}
	}
	if strings.TrimSpace(jitter) != "" {
		if p.Jitter, err = ParseJitter(jitter); err != nil {
			return Policy{}, err
		}
	}
	if err := p.Validate(); err != nil {
		return Policy{}, err
	}
	return p, nil
}

// parsePercent reads "80%", "2.5%" or "66.67%" as basis points. Decimal text is read digit by digit
// rather than through a float, so what the configuration says is exactly what is used. A value too
// large to hold is returned as a huge number for the caller's range check to refuse.
// Both settings share this form, so its errors give examples that fit either.
func parsePercent(s string) (int, error) {
	num := strings.TrimSpace(strings.TrimSuffix(s, "%"))
	neg := strings.HasPrefix(num, "-")
	num = strings.TrimPrefix(num, "-")
	whole, frac, dot := strings.Cut(num, ".")
	if whole == "" || !isDigits(whole) || (dot && (frac == "" || !isDigits(frac))) {
		return 0, errPercentSyntax
	}
	if len(frac) > 2 {
		return 0, errPercentDecimals
	}
	whole = strings.TrimLeft(whole, "0")
	if len(whole) > 6 {
		return math.MaxInt32, nil
	}
	w, _ := strconv.Atoi("0" + whole) // digits only and short: cannot fail
	f, _ := strconv.Atoi((frac + "00")[:2])
	bp := w*100 + f
	if neg {
		bp = -bp
	}
	return bp, nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// ParseDuration reads a duration as dpsagent's and iotemu's configuration files
// write it: Go's syntax ("90s", "15m", "36h") plus "d" for days ("30d", "1d12h").
func ParseDuration(s string) (time.Duration, error) {
	d, err := parseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("duration %q: %w", s, err)
	}
	return d, nil
}

// parseDuration is time.ParseDuration with one more unit, "d" for 24 hours, because certificate
// lifetimes and margins are counted in days. Components combine as in Go: "1d12h", "1.5d".
func parseDuration(s string) (time.Duration, error) {
	rest, neg := s, false
	if rest != "" && (rest[0] == '-' || rest[0] == '+') {
		neg, rest = rest[0] == '-', rest[1:]
	}
	if rest == "0" {
		return 0, nil
	}
	if rest == "" {
		return 0, policyError("no duration given")
	}
	var total time.Duration
	for rest != "" {
		n := prefixLen(rest, isNumberByte)
		u := n + prefixLen(rest[n:], func(b byte) bool { return !isNumberByte(b) })
		num, unit := rest[:n], rest[n:u]
		if num == "" || unit == "" {
			return 0, policyError("each part needs a number and a unit (d, h, m, s, ms)")
		}
		part, err := durationPart(num, unit)
		if err != nil {
			return 0, err
		}
		if total > math.MaxInt64-part {
			return 0, errDurationTooLong
		}
		total += part
		rest = rest[u:]
	}
	if neg {
		total = -total
	}
	return total, nil
}

// durationPart reads one number-and-unit component, leaving the number syntax to Go.
func durationPart(num, unit string) (time.Duration, error) {
	size, ok := unitSize(unit)
	if !ok {
		return 0, fmt.Errorf("unknown unit %q: use d, h, m, s or ms", unit)
	}
	if f, err := strconv.ParseFloat(num, 64); err == nil && f*float64(size) >= math.MaxInt64 {
		return 0, errDurationTooLong
	}
	if unit != "d" {
		return time.ParseDuration(num + unit)
	}
	h, err := time.ParseDuration(num + "h")
	if err != nil {
		return 0, fmt.Errorf("%q is not a number of days: %w", num+unit, err)
	}
	if h > math.MaxInt64/24 {
		return 0, errDurationTooLong
	}
	return h * 24, nil
}

// unitSize knows Go's duration units and "d".
func unitSize(unit string) (time.Duration, bool) {
	switch unit {
	case "d":
		return day, true
	case "h":
		return time.Hour, true
	case "m":
		return time.Minute, true
	case "s":
		return time.Second, true
	case "ms":
		return time.Millisecond, true
	case "us", "µs", "μs":
		return time.Microsecond, true
	case "ns":
		return time.Nanosecond, true
	}
	return 0, false
}

func isNumberByte(b byte) bool { return b == '.' || ('0' <= b && b <= '9') }

func prefixLen(s string, ok func(byte) bool) int {
	i := 0
	for i < len(s) && ok(s[i]) {
		i++
	}
	return i
}
