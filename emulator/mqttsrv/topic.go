package mqttsrv

import (
	"errors"
	"strings"
	"unicode/utf8"
)

// checkString applies MQTT 3.1.1 §1.5.3 to a UTF-8 encoded string: well-formed (utf8.ValidString also
// rejects surrogates and overlong forms) and without U+0000. Both are grounds to close the connection.
func checkString(s string) error {
	if !utf8.ValidString(s) {
		return errors.New("not well-formed UTF-8")
	}
	if strings.IndexByte(s, 0) >= 0 {
		return errors.New("contains U+0000")
	}
	return nil
}

// checkTopicName validates a topic a message is published to (§4.7): wildcards only belong in filters.
func checkTopicName(name string) error {
	if err := checkString(name); err != nil {
		return err
	}
	if name == "" {
		return errors.New("empty topic name")
	}
	if len(name) > 0xffff { // only reachable from Conn.Publish: paho's encoder would silently truncate it
		return errors.New("topic name longer than 65535 bytes")
	}
	if strings.ContainsAny(name, "+#") {
		return errors.New("wildcard in a topic name")
	}
	return nil
}

// checkTopicFilter validates a subscription filter (§4.7.1): '#' only as the whole last level, '+' only as a
// whole level.
func checkTopicFilter(filter string) error {
	if err := checkString(filter); err != nil {
		return err
	}
	if filter == "" {
		return errors.New("empty topic filter")
	}
	levels := strings.Split(filter, "/")
	for i, level := range levels {
		switch {
		case level == "#" && i != len(levels)-1:
			return errors.New("'#' before the last level")
		case level != "#" && strings.Contains(level, "#"):
			return errors.New("'#' inside a level")
		case level != "+" && strings.Contains(level, "+"):
			return errors.New("'+' inside a level")
		}
	}
	return nil
}
