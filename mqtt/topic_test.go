package mqtt

import (
	"errors"
	"testing"
	"time"
)

func TestParseTopic(t *testing.T) {
	const dps = "$dps/registrations/res/"
	tests := []struct {
		name       string
		topic      string
		prefix     string
		status     int
		rid        string
		hasRID     bool
		retryAfter time.Duration
		hasRetry   bool
		version    int64
		hasVersion bool
		bad        bool // ParseTopic fails
		badStatus  bool
		badRetry   bool
	}{
		{name: "documented 202", topic: "$dps/registrations/res/202/?$rid=1&retry-after=3", prefix: dps, status: 202, rid: "1", hasRID: true, retryAfter: 3 * time.Second, hasRetry: true},
		{name: "retry-after first", topic: "$dps/registrations/res/202/?retry-after=5&$rid=abc", prefix: dps, status: 202, rid: "abc", hasRID: true, retryAfter: 5 * time.Second, hasRetry: true},
		{name: "200 without retry-after", topic: "$dps/registrations/res/200/?$rid=42", prefix: dps, status: 200, rid: "42", hasRID: true},
		{name: "unknown parameters ignored", topic: "$dps/registrations/res/429/?foo=bar&$rid=7&retry-after=0&x", prefix: dps, status: 429, rid: "7", hasRID: true, hasRetry: true},
		{name: "escaped rid", topic: "$dps/registrations/res/200/?$rid=a%2Fb%20c", prefix: dps, status: 200, rid: "a/b c", hasRID: true},
		{name: "GUID rid", topic: "$iothub/twin/res/204/?$rid=0f8fad5b-d9cb-469f-a165-70867728950e&$version=12", prefix: "$iothub/twin/res/", status: 204, rid: "0f8fad5b-d9cb-469f-a165-70867728950e", hasRID: true, version: 12, hasVersion: true},
		{name: "status without trailing slash", topic: "$iothub/twin/res/200?$rid=1", prefix: "$iothub/twin/res/", status: 200, rid: "1", hasRID: true},
		{name: "no query", topic: "$dps/registrations/res/500/", prefix: dps, status: 500},
		{name: "empty rid", topic: "$dps/registrations/res/200/?$rid=", prefix: dps, status: 200, rid: "", hasRID: true},
		{name: "duplicate rid", topic: "$dps/registrations/res/200/?$rid=1&$rid=2", bad: true},
		{name: "duplicate retry-after", topic: "$dps/registrations/res/202/?$rid=1&retry-after=1&retry-after=9", bad: true},
		{name: "bad escape", topic: "$dps/registrations/res/200/?$rid=%zz", bad: true},
		{name: "semicolon is ordinary", topic: "$dps/registrations/res/200/?$rid=1;x=2", prefix: dps, status: 200, rid: "1;x=2", hasRID: true},
		{name: "plus is a plus", topic: "$dps/registrations/res/200/?$rid=a+b%20c", prefix: dps, status: 200, rid: "a+b c", hasRID: true},
		{name: "escaped name", topic: "$dps/registrations/res/200/?%24rid=9", prefix: dps, status: 200, rid: "9", hasRID: true},
		{name: "bad escape in name", topic: "$dps/registrations/res/200/?%g=1", bad: true},
		{name: "negative retry-after", topic: "$dps/registrations/res/202/?$rid=1&retry-after=-3", prefix: dps, status: 202, rid: "1", hasRID: true, hasRetry: true, badRetry: true},
		{name: "fractional retry-after", topic: "$dps/registrations/res/202/?$rid=1&retry-after=1.5", prefix: dps, status: 202, rid: "1", hasRID: true, hasRetry: true, badRetry: true},
		{name: "huge retry-after", topic: "$dps/registrations/res/202/?$rid=1&retry-after=99999999999999999999", prefix: dps, status: 202, rid: "1", hasRID: true, hasRetry: true, badRetry: true},
		{name: "wrong prefix", topic: "$iothub/twin/res/200/?$rid=1", prefix: dps, rid: "1", hasRID: true, badStatus: true},
		{name: "status not a number", topic: "$dps/registrations/res/abc/?$rid=1", prefix: dps, rid: "1", hasRID: true, badStatus: true},
		{name: "status too long", topic: "$dps/registrations/res/2020/?$rid=1", prefix: dps, rid: "1", hasRID: true, badStatus: true},
		{name: "status below 100", topic: "$dps/registrations/res/099/?$rid=1", prefix: dps, rid: "1", hasRID: true, badStatus: true},
		{name: "extra path after status", topic: "$dps/registrations/res/200/extra?$rid=1", prefix: dps, rid: "1", hasRID: true, badStatus: true},
		{name: "no status", topic: "$dps/registrations/res/", prefix: dps, badStatus: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			topic, err := ParseTopic(tt.topic)
			if tt.bad {
				if !errors.Is(err, ErrMalformedTopic) {
					t.Fatalf("ParseTopic error %v, want ErrMalformedTopic", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.prefix != "" {
				status, err := topic.Status(tt.prefix)
				if tt.badStatus != (err != nil) || status != tt.status {
					t.Errorf("Status = %d, %v; want %d (error %v)", status, err, tt.status, tt.badStatus)
				}
				if err != nil && !errors.Is(err, ErrMalformedTopic) {
					t.Errorf("Status error %v does not wrap ErrMalformedTopic", err)
				}
			}
			if rid, ok := topic.RequestID(); rid != tt.rid || ok != tt.hasRID {
				t.Errorf("RequestID = %q, %v; want %q, %v", rid, ok, tt.rid, tt.hasRID)
			}
			d, ok, err := topic.RetryAfter()
			if d != tt.retryAfter || ok != tt.hasRetry || (err != nil) != tt.badRetry {
				t.Errorf("RetryAfter = %v, %v, %v; want %v, %v, error %v", d, ok, err, tt.retryAfter, tt.hasRetry, tt.badRetry)
			}
			v, ok, err := topic.Version()
			if v != tt.version || ok != tt.hasVersion || err != nil {
				t.Errorf("Version = %d, %v, %v; want %d, %v", v, ok, err, tt.version, tt.hasVersion)
			}
		})
	}
}

func TestTopicVersionErrors(t *testing.T) {
	for _, q := range []string{"$version=-1", "$version=x", "$version=1e3", "$version=99999999999999999999"} {
		topic, err := ParseTopic("$iothub/twin/PATCH/properties/desired/?" + q)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok, err := topic.Version(); !ok || !errors.Is(err, ErrMalformedTopic) {
			t.Errorf("%s: ok=%v err=%v, want present and malformed", q, ok, err)
		}
	}
}

func FuzzParseTopic(f *testing.F) {
	for _, s := range []string{
		"$dps/registrations/res/202/?$rid=1&retry-after=3",
		"$dps/registrations/res/200/?retry-after=0&$rid=x",
		"$iothub/twin/res/204/?$rid=1&$version=5",
		"$dps/registrations/res/abc/?%zz",
		"?",
		"",
		"$dps/registrations/res/200/?$rid=1&$rid=2",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		topic, err := ParseTopic(s)
		if err != nil {
			if !errors.Is(err, ErrMalformedTopic) {
				t.Fatalf("error %v does not wrap ErrMalformedTopic", err)
			}
			return
		}
		if status, err := topic.Status("$dps/registrations/res/"); err == nil && (status < 100 || status > 999) {
			t.Fatalf("status %d accepted", status)
		}
		if d, _, err := topic.RetryAfter(); err == nil && d < 0 {
			t.Fatalf("negative retry-after %v", d)
		}
		if v, _, err := topic.Version(); err == nil && v < 0 {
			t.Fatalf("negative version %d", v)
		}
		_, _ = topic.RequestID()
	})
}
