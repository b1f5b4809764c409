package emulator

import (
	"encoding/json"
	"slices"
	"testing"
)

// Fuzz targets for the payload parsers a device or an operator can reach:
// the credential API's request body, the reported-properties patch and the
// configuration file. Topics, user names, DPS bodies and CSRs have theirs
// beside their parsers.

// An issueCertificate body is refused with 400006 (not JSON) or 400004 (a
// bad field), or read into exactly the fields the service takes.
func FuzzHubCredentialRequest(f *testing.F) {
	for _, s := range []string{
		`{"id":"dev-1","csr":"MIIB"}`,
		`{"id":"dev-1","csr":"MIIB","replace":"*"}`,
		`{"id":"dev-1","csr":"MIIB","replace":"0f8fad5b-d9cb-469f-a165-70867728950e"}`,
		`{"id":"dev-2","csr":"MIIB"}`,
		`{"id":"dev-1","csr":"MIIB","extra":1}`,
		`{"id":"dev-1","csr":"MIIB","replace":"-bad-"}`,
		`{"id":"dev-1"`,
		`["dev-1"]`,
		`null`,
		``,
	} {
		f.Add([]byte(s))
	}
	s := &hubSession{deviceID: "dev-1"}
	f.Fuzz(func(t *testing.T, payload []byte) {
		body, herr := s.decodeCredentialRequest(payload)
		if herr != nil {
			if herr.code != hubErrFormat && herr.code != hubErrArgumentInvalid {
				t.Fatalf("%q refused with %d, want 400006 or 400004", payload, herr.code)
			}
			if !json.Valid(payload) && herr.code != hubErrFormat {
				t.Fatalf("%q is not JSON but was refused with %d, want 400006", payload, herr.code)
			}
			return
		}
		switch {
		case !json.Valid(payload):
			t.Fatalf("%q accepted, but it is not JSON", payload)
		case body.ID == nil || *body.ID != "dev-1":
			t.Fatalf("%q accepted for another device: %v", payload, body.ID)
		case body.CSR == nil || *body.CSR == "":
			t.Fatalf("%q accepted without a csr", payload)
		case body.Replace != nil && *body.Replace != "*" && !hubCredentialRIDPattern.MatchString(*body.Replace):
			t.Fatalf("%q accepted with replace %q", payload, *body.Replace)
		}
	})
}

// A reported-properties patch is refused, or is a JSON object that merges
// into any twin leaving a twin IoT Hub can still send as JSON.
func FuzzHubReportedPatch(f *testing.F) {
	for _, s := range []string{
		`{"firmware":"1.2.3"}`,
		`{"a":{"b":null,"c":[1,2,{"d":true}]},"$version":4}`,
		`{"n":123456789012345678901234567890}`,
		`{"a":1}{"b":2}`,
		`[1]`,
		`"text"`,
		`{`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		patch, herr := hubDecodeReportedPatch(payload)
		if herr != nil {
			if herr.code != hubErrFormat && herr.code != hubErrArgumentInvalid {
				t.Fatalf("%q refused with %d", payload, herr.code)
			}
			return
		}
		if patch == nil || !json.Valid(payload) {
			t.Fatalf("%q accepted as %v", payload, patch)
		}
		twin := NewTwin()
		twin.Reported["a"] = map[string]any{"b": 1.0, "keep": "x"}
		MergePatch(twin.Reported, patch)
		once := twin.JSON()
		if !json.Valid(once) {
			t.Fatalf("after %q the twin is %q, not JSON", payload, once)
		}
		MergePatch(twin.Reported, patch) // RFC 7386: applying it again changes nothing
		if twice := twin.JSON(); string(twice) != string(once) {
			t.Fatalf("%q applied twice: %s, then %s", payload, once, twice)
		}
	})
}

// A configuration is refused or parses into one that validates and whose
// defaults are all filled in, once and for all.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		"",
		"id_scope: 0ne0000ABCD\ndps: {listen: '127.0.0.1:0'}\n",
		"hubs: [{name: a, host: h.example, listen: '127.0.0.1:0'}, {name: b, listen: '127.0.0.3:0'}]\n",
		"certificates: {lifetime: 90s, key_types: [ecdsa-p384], credential_api_delay: 1d12h, credential_api_body: array, credential_api_conflict_code: 409004}\n",
		"enrollments: [{registration_id: gw-1, attestation: {type: symmetric_key, primary_key: c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=}, allocation: static}]\n",
		"enrollments: [{group_id: g, attestation: {type: x509, ca_file: /nonexistent}}]\n",
		"a: &a [*a]\n",
		"id_scop: x\n",
		"---\n---\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err != nil {
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("%q parsed into a configuration that does not validate: %v", data, err)
		}
		if cfg.IDScope == "" || cfg.DPS.Listen == "" || cfg.Admin.Listen == "" || len(cfg.Hubs) == 0 ||
			cfg.Certificates.Lifetime == 0 || cfg.Certificates.CredentialAPIConflictCode == 0 {
			t.Fatalf("%q parsed with a default missing: %+v", data, cfg)
		}
		again := cfg
		again.Hubs, again.Enrollments = slices.Clone(cfg.Hubs), slices.Clone(cfg.Enrollments)
		again.Defaults()
		if mustJSONValue(t, again) != mustJSONValue(t, cfg) {
			t.Fatalf("%q: Defaults is not idempotent", data)
		}
	})
}

func mustJSONValue(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
