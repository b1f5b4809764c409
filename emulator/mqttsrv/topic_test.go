package mqttsrv

import "testing"

func TestTopicRules(t *testing.T) {
	tests := []struct {
		topic        string
		name, filter bool // valid as a topic name, as a topic filter
	}{
		{"$dps/registrations/PUT/iotdps-register/?$rid=1", true, true},
		{"$iothub/twin/res/200/?$rid=4&$version=2", true, true},
		{"devices/d-1/messages/events/a=b&c=d", true, true},
		{"/", true, true},
		{"a//b", true, true},
		{"with space", true, true},
		{"é/ü/日本", true, true},
		{"#", false, true},
		{"+", false, true},
		{"$dps/registrations/res/#", false, true},
		{"a/+/b", false, true},
		{"+/+/#", false, true},
		{"", false, false},
		{"a/#/b", false, false},
		{"a#", false, false},
		{"a/b#", false, false},
		{"a+", false, false},
		{"a/+b", false, false},
		{"a\x00b", false, false},
		{"\xff", false, false},
		{"\xed\xa0\x80", false, false}, // a UTF-16 surrogate
		{"\xc0\x80", false, false},     // U+0000, overlong
	}
	for _, tt := range tests {
		if got := checkTopicName(tt.topic) == nil; got != tt.name {
			t.Errorf("topic name %q valid = %t, want %t", tt.topic, got, tt.name)
		}
		if got := checkTopicFilter(tt.topic) == nil; got != tt.filter {
			t.Errorf("topic filter %q valid = %t, want %t", tt.topic, got, tt.filter)
		}
	}
}
