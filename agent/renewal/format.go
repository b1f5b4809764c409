package renewal

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

const day = 24 * time.Hour

// formatBP writes basis points as the configuration does: "80%", "2.5%", "66.67%".
func formatBP(bp int) string {
	sign := ""
	if bp < 0 {
		sign, bp = "-", -bp
	}
	whole, frac := bp/100, bp%100
	switch {
	case frac == 0:
		return fmt.Sprintf("%s%d%%", sign, whole)
	case frac%10 == 0:
		return fmt.Sprintf("%s%d.%d%%", sign, whole, frac/10)
	default:
		return fmt.Sprintf("%s%d.%02d%%", sign, whole, frac)
	}
}

// formatDuration writes d exactly, in the form the configuration accepts: whole days as "7d",
// anything else as Go does but without zero tails, so "36h" and "90m" (as "1h30m") read as a person
// writes them. [ParseThreshold] reads it back to the same value.
func formatDuration(d time.Duration) string {
	if d > 0 && d%day == 0 {
		return strconv.FormatInt(int64(d/day), 10) + "d"
	}
	s := d.String()
	// Go writes 36h as "36h0m0s".
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// human writes d for people, to two units at most: "1d7h", "1h12m", "4m30s", "4.5s", "600ms".
// Status lines need the size of a wait, not its nanoseconds.
func human(d time.Duration) string {
	if d < 0 {
		if d == math.MinInt64 {
			d++
		}
		return "-" + human(-d)
	}
	switch {
	case d >= day:
		r := d.Round(time.Hour)
		return joinUnits(int64(r/day), "d", int64(r%day/time.Hour), "h")
	case d >= time.Hour:
		r := d.Round(time.Minute)
		if r >= day {
			return human(r) // rounding reached the next unit
		}
		return joinUnits(int64(r/time.Hour), "h", int64(r%time.Hour/time.Minute), "m")
	case d >= time.Minute:
		r := d.Round(time.Second)
		if r >= time.Hour {
			return human(r) // rounding reached the next unit
		}
		return joinUnits(int64(r/time.Minute), "m", int64(r%time.Minute/time.Second), "s")
	case d >= time.Second:
		r := d.Round(100 * time.Millisecond)
		if r >= time.Minute {
			return human(r) // rounding reached the next unit
		}
		return strconv.FormatFloat(r.Seconds(), 'f', -1, 64) + "s"
	case d >= time.Millisecond:
		r := d.Round(time.Millisecond)
		if r >= time.Second {
			return human(r) // rounding reached the next unit
		}
		return strconv.FormatInt(r.Milliseconds(), 10) + "ms"
	default:
		return d.String()
	}
}

func joinUnits(big int64, bigUnit string, small int64, smallUnit string) string {
	if small == 0 {
		return strconv.FormatInt(big, 10) + bigUnit
	}
	return strconv.FormatInt(big, 10) + bigUnit + strconv.FormatInt(small, 10) + smallUnit
}

// lifetimePhrase names a lifetime as an adjective, "30-day" or "90-minute", falling back to
// [human] for lifetimes that are not a whole number of one unit.
func lifetimePhrase(d time.Duration) string {
	for _, u := range []struct {
		size time.Duration
		name string
	}{{day, "day"}, {time.Hour, "hour"}, {time.Minute, "minute"}, {time.Second, "second"}} {
		if d >= u.size && d%u.size == 0 {
			return fmt.Sprintf("%d-%s", d/u.size, u.name)
		}
	}
	return human(d)
}

// formatTime writes t as the project's JSON does: RFC 3339 in UTC.
func formatTime(t time.Time) string {
	return t.UTC().Format(time.RFC3339)
}
