package renewal_test

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/dpsagent/dpsagent/agent/renewal"
)

func TestParseThreshold(t *testing.T) {
	tests := []struct {
		in     string
		want   string        // String() of the result
		before time.Duration // the time before expiry, if expressed that way
	}{
		{"80%", "80%", 0},
		{" 80% ", "80%", 0},
		{"80 %", "80%", 0},
		{"080%", "80%", 0},
		{"1%", "1%", 0},
		{"99%", "99%", 0},
		{"66.67%", "66.67%", 0},
		{"2.50%", "2.5%", 0},
		{"7d", "7d", 7 * day},
		{"36h", "36h", 36 * time.Hour},
		{"90m", "1h30m", 90 * time.Minute},
		{"1.5d", "36h", 36 * time.Hour},
		{"1d12h", "36h", 36 * time.Hour},
		{"2d30m", "48h30m", 48*time.Hour + 30*time.Minute},
		{"+7d", "7d", 7 * day},
		{"1ns", "1ns", 1},
	}
	for _, tt := range tests {
		th, err := renewal.ParseThreshold(tt.in)
		if err != nil {
			t.Errorf("ParseThreshold(%q): %v", tt.in, err)
			continue
		}
		if th.String() != tt.want {
			t.Errorf("ParseThreshold(%q) = %s, want %s", tt.in, th, tt.want)
		}
		before, ok := th.BeforeExpiry()
		if ok != (tt.before > 0) || before != tt.before {
			t.Errorf("ParseThreshold(%q).BeforeExpiry() = %v, %v; want %v", tt.in, before, ok, tt.before)
		}
	}
}

func TestParseThresholdErrors(t *testing.T) {
	// Each error names the bad value and shows what would be valid.
	tests := []struct{ in, hint string }{
		{"", `such as "80%" or a time before expiry such as "7d", "36h" or "90m"`},
		{"80", `such as "80%"`},
		{"eighty", `such as "80%"`},
		{"0%", `use 1% to 99% of the lifetime, such as "80%"`},
		{"0.99%", "use 1% to 99%"},
		{"99.01%", "use 1% to 99%"},
		{"100%", "use 1% to 99%"},
		{"-5%", "use 1% to 99%"},
		{"99999999999999999999%", "use 1% to 99%"},
		{"66.667%", "at most two decimal places"},
		{".5%", `not a percentage such as "80%"`},
		{"5.%", `not a percentage`},
		{"1e2%", `not a percentage`},
		{"%", `not a percentage`},
		{"0", `must be positive, such as "7d"`},
		{"0s", "must be positive"},
		{"-7d", "must be positive"},
		{"7x", `unknown unit "x"`},
		{"d", "needs a number and a unit"},
		{"7", "needs a number and a unit"},
		{"1..5d", "is not a number of days"},
		{"999999999d", "too long"},
		{"106000d106000d", "too long"},
	}
	for _, tt := range tests {
		_, err := renewal.ParseThreshold(tt.in)
		if err == nil {
			t.Errorf("ParseThreshold(%q) accepted a bad value", tt.in)
			continue
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "threshold \""+tt.in+"\": ") {
			t.Errorf("ParseThreshold(%q): %q does not name the value first", tt.in, msg)
		}
		if !strings.Contains(msg, tt.hint) {
			t.Errorf("ParseThreshold(%q): %q\n does not contain %q", tt.in, msg, tt.hint)
		}
	}
}

func TestParseJitter(t *testing.T) {
	good := map[string]string{"5%": "5%", "0%": "0%", "0.5%": "0.5%", "50%": "50%", "2.25%": "2.25%", "50.00%": "50%"}
	for in, want := range good {
		j, err := renewal.ParseJitter(in)
		if err != nil || j.String() != want {
			t.Errorf("ParseJitter(%q) = %v, %v; want %s", in, j, err, want)
		}
	}
	bad := map[string]string{
		"50.01%": `use 0% to 50% of the lifetime, such as "5%"`,
		"60%":    "use 0% to 50%",
		"-1%":    "use 0% to 50%",
		"5":      `not a share of the lifetime such as "5%"`,
		"1h":     `not a share of the lifetime such as "5%"`,
		"":       `not a share of the lifetime`,
		"1.234%": "at most two decimal places",
	}
	for in, hint := range bad {
		_, err := renewal.ParseJitter(in)
		if err == nil {
			t.Errorf("ParseJitter(%q) accepted a bad value", in)
			continue
		}
		if msg := err.Error(); !strings.HasPrefix(msg, "jitter \""+in+"\": ") || !strings.Contains(msg, hint) {
			t.Errorf("ParseJitter(%q): %q\n should name the value and contain %q", in, msg, hint)
		}
	}
}

func TestParsePolicy(t *testing.T) {
	tests := []struct {
		threshold, jitter string
		want              string // String() of the policy, or a part of the error
		ok                bool
	}{
		{"", "", "threshold 80%, jitter 5%", true},
		{"80%", "5%", "threshold 80%, jitter 5%", true},
		{"7d", "", "threshold 7d, jitter 5%", true},
		{"", "0%", "threshold 80%, jitter 0%", true},
		{"7d", "50%", "threshold 7d, jitter 50%", true},
		{"10%", "10%", `jitter 10% is not smaller than threshold 10%`, false},
		{"10%", "20%", `lower the jitter (such as "5%") or raise the threshold (such as "80%")`, false},
		{"120%", "5%", `threshold "120%"`, false},
		{"80%", "5", `jitter "5"`, false},
	}
	for _, tt := range tests {
		p, err := renewal.ParsePolicy(tt.threshold, tt.jitter)
		if tt.ok {
			if err != nil || p.String() != tt.want {
				t.Errorf("ParsePolicy(%q, %q) = %v, %v; want %s", tt.threshold, tt.jitter, p, err, tt.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParsePolicy(%q, %q) error %v, want one containing %q", tt.threshold, tt.jitter, err, tt.want)
		}
	}
	if err := (renewal.Policy{}).Validate(); err != nil {
		t.Errorf("the zero Policy (the default) does not validate: %v", err)
	}
	if renewal.DefaultPolicy().String() != (renewal.Policy{}).String() {
		t.Errorf("zero Policy %v differs from DefaultPolicy %v", renewal.Policy{}, renewal.DefaultPolicy())
	}
}

func TestConstructors(t *testing.T) {
	if th, err := renewal.ThresholdPercent(66.67); err != nil || th.String() != "66.67%" {
		t.Errorf("ThresholdPercent(66.67) = %v, %v", th, err)
	}
	for pct, hint := range map[float64]string{0: "use 1% to 99%", 0.5: "use 1% to 99%", 99.5: "use 1% to 99%", 100: "use 1% to 99%", 80.001: "at most two decimal places", math.Inf(1): "not a percentage"} {
		if _, err := renewal.ThresholdPercent(pct); err == nil || !strings.Contains(err.Error(), hint) {
			t.Errorf("ThresholdPercent(%v): error %v, want one containing %q", pct, err, hint)
		}
	}
	if th, err := renewal.ThresholdBeforeExpiry(36 * time.Hour); err != nil || th.String() != "36h" {
		t.Errorf("ThresholdBeforeExpiry(36h) = %v, %v", th, err)
	}
	if _, err := renewal.ThresholdBeforeExpiry(0); err == nil || !strings.Contains(err.Error(), "must be positive") {
		t.Errorf("ThresholdBeforeExpiry(0): %v", err)
	}
	if j, err := renewal.JitterPercent(0); err != nil || j.String() != "0%" {
		t.Errorf("JitterPercent(0) = %v, %v; an explicit 0%% must not fall back to the default", j, err)
	}
	if _, err := renewal.JitterPercent(50.5); err == nil {
		t.Error("JitterPercent(50.5) accepted")
	}
}

func TestTextRoundTrip(t *testing.T) {
	// Configuration decoders use MarshalText/UnmarshalText; what they write must read back the same.
	for _, in := range []string{"80%", "66.67%", "7d", "36h", "90m", "1ns", "1.5d"} {
		var th renewal.Threshold
		if err := th.UnmarshalText([]byte(in)); err != nil {
			t.Fatalf("UnmarshalText(%q): %v", in, err)
		}
		out, _ := th.MarshalText()
		var again renewal.Threshold
		if err := again.UnmarshalText(out); err != nil || again != th {
			t.Errorf("%q: wrote %q, read back %v (%v)", in, out, again, err)
		}
	}
	var j renewal.Jitter
	if err := j.UnmarshalText([]byte("2.5%")); err != nil {
		t.Fatal(err)
	}
	if out, _ := j.MarshalText(); string(out) != "2.5%" {
		t.Errorf("jitter wrote %q, want 2.5%%", out)
	}
	if err := j.UnmarshalText([]byte("70%")); err == nil {
		t.Error("UnmarshalText(70%) accepted")
	}
	if j.String() != "2.5%" {
		t.Errorf("a failed UnmarshalText changed the jitter to %v", j)
	}
}
