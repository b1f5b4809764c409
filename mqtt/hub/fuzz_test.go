package hub

import (
	"bytes"
	"maps"
	"testing"
)

// The parsers take whatever the hub sends. They must never panic, and what
// they accept must make sense.

func FuzzParseResponseTopic(f *testing.F) {
	for _, s := range []string{
		"$iothub/twin/res/200/?$rid=1", "$iothub/twin/res/204/?$rid=a&$version=3", "$iothub/credentials/res/202/?$rid=x&$version=1",
		"$iothub/twin/res/200?$rid=%zz", "$iothub/twin/res/", "$iothub/credentials/res/999/?$rid=a&$rid=b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		for _, prefix := range []string{prefixTwinResponse, prefixCredentialsRes} {
			rt, err := parseResponseTopic(topic, prefix)
			if err == nil && (rt.status < 100 || rt.status > 999 || rt.rid == "") {
				t.Fatalf("accepted %q as status %d rid %q", topic, rt.status, rt.rid)
			}
		}
	})
}

func FuzzParseMethodTopic(f *testing.F) {
	for _, s := range []string{"$iothub/methods/POST/reboot/?$rid=1", "$iothub/methods/POST//?$rid=", "$iothub/methods/POST/a?$rid=%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		mt, err := parseMethodTopic(topic)
		if err != nil {
			return
		}
		if mt.name == "" || mt.rawRID == "" {
			t.Fatalf("accepted %q with an empty name or rid: %+v", topic, mt)
		}
		// The answer's topic must be a valid MQTT topic name.
		if answer := methodResponseTopic(200, mt.rawRID); bytes.ContainsAny([]byte(answer), "+#\x00") {
			t.Fatalf("answer topic %q has wildcards", answer)
		}
	})
}

func FuzzParseDesired(f *testing.F) {
	f.Add("$iothub/twin/PATCH/properties/desired/?$version=4", []byte(`{"a":1,"$version":4}`))
	f.Add("$iothub/twin/PATCH/properties/desired/", []byte(`{"a":{"b":null}}`))
	f.Add("$iothub/twin/PATCH/properties/desired/?$version=x", []byte(`[[[[`))
	f.Fuzz(func(t *testing.T, topic string, body []byte) {
		v, ok, err := parseDesiredTopic(topic)
		if err != nil {
			return
		}
		patch, version, err := parseDesiredPatch(body, v, ok)
		if err != nil {
			return
		}
		if version < 0 || version > maxVersion {
			t.Fatalf("version %d out of range", version)
		}
		if _, has := patch["$version"]; has {
			t.Fatalf("$version left in the patch")
		}
	})
}

func FuzzParseC2DTopic(f *testing.F) {
	f.Add("devices/d/messages/devicebound/%24.mid=1&a=b")
	f.Add("devices/d/messages/devicebound/a&&=&b=%")
	f.Fuzz(func(t *testing.T, topic string) {
		props, err := parseC2DTopic(topic, "d")
		if err != nil {
			return
		}
		// What was read survives being written and read again.
		if _, has := props[""]; has {
			t.Fatalf("accepted a property without a name from %q", topic)
		}
		bag, err := encodePropertyBag(props)
		if err != nil {
			if _, dollarOnly := props["$."]; dollarOnly {
				return
			}
			t.Fatalf("encodePropertyBag(%v): %v", props, err)
		}
		again, err := parsePropertyBag(bag)
		if err != nil || !maps.Equal(again, props) {
			t.Fatalf("round trip of %v through %q gave %v, %v", props, bag, again, err)
		}
	})
}

func FuzzParseTwin(f *testing.F) {
	f.Add([]byte(`{"desired":{"$version":1},"reported":{"$version":2,"x":[1,{"y":null}]}}`))
	f.Add([]byte(`{"desired":{"$version":1e400},"reported":{}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		doc, err := parseTwin(body)
		if err != nil {
			return
		}
		if doc.desired == nil || doc.reported == nil || doc.desiredVersion < 0 || doc.reportedVersion < 0 {
			t.Fatalf("accepted an incomplete twin: %+v", doc)
		}
	})
}

func FuzzParseCredentialAnswers(f *testing.F) {
	f.Add([]byte(`{"correlationId":"c","certificates":["MAo=","MAo="]}`))
	f.Add([]byte(`["MAo="]`))
	f.Add([]byte(`{"correlationId":"c","operationExpires":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"errorCode":409005,"message":"m","trackingId":"t","retryAfter":3,"info":{"requestId":"r"}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		if chain, err := parseIssued(body); err == nil {
			if len(chain) == 0 || len(chain) > maxChainLen {
				t.Fatalf("accepted a chain of %d certificates", len(chain))
			}
			for _, c := range chain {
				if len(c) == 0 || len(c) > maxCertBytes {
					t.Fatalf("accepted a certificate of %d bytes", len(c))
				}
			}
		}
		_, _ = parseAccepted(body)
		e := parseErrorBody("issueCertificate", 400, body)
		if e.RetryAfter < 0 || e.Code < 0 || len(e.Message) > 200 {
			t.Fatalf("implausible error: %+v", e)
		}
		_ = e.Error()
	})
}
