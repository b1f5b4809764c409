package sas_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dpsagent/dpsagent/mqtt/sas"
)

func TestResources(t *testing.T) {
	if got, want := sas.DPSResource("0ne00000001", "gw-1"), "0ne00000001/registrations/gw-1"; got != want {
		t.Errorf("DPSResource = %q, want %q", got, want)
	}
	if got, want := sas.HubResource("h.azure-devices.net", "gw-1"), "h.azure-devices.net/devices/gw-1"; got != want {
		t.Errorf("HubResource = %q, want %q", got, want)
	}
}

func TestSignParseVerifyRoundTrip(t *testing.T) {
	key := mustDecodeKey(t, katDeviceKey)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	expiry := now.Add(time.Hour)
	for _, tc := range []struct {
		name, resource, keyName string
	}{
		{"dps", sas.DPSResource("0ne0000ABCD", "Gateway-001"), sas.KeyNameRegistration},
		{"hub", sas.HubResource("myhub.azure-devices.net", "dev:1+2"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := sas.Parse(sas.Sign(tc.resource, key, tc.keyName, expiry))
			if err != nil {
				t.Fatal(err)
			}
			if tok.Resource() != tc.resource || tok.KeyName() != tc.keyName || !tok.Expiry().Equal(expiry) {
				t.Errorf("parsed (%q, %q, %s), signed (%q, %q, %s)",
					tok.Resource(), tok.KeyName(), tok.Expiry(), tc.resource, tc.keyName, expiry)
			}
			if err := sas.Verify(tok, tc.resource, [][]byte{key}, now); err != nil {
				t.Errorf("Verify: %v", err)
			}
		})
	}
}

func TestParse(t *testing.T) {
	const (
		sr  = "sr=0ne00000001%2Fregistrations%2Fgateway-001"
		sig = "sig=QFQTmJZlRai0ZmCW%2FCh904OlC0B63NsxzymZiDCOLoo%3D"
		se  = "se=1767225600"
		skn = "skn=registration"
		pre = "SharedAccessSignature "
	)
	valid := []struct {
		name, token, keyName string
	}{
		{"documented order", pre + sr + "&" + sig + "&" + se + "&" + skn, "registration"},
		{"any order", pre + skn + "&" + se + "&" + sig + "&" + sr, "registration"},
		{"no skn", pre + sr + "&" + sig + "&" + se, ""},
		{"field names in capitals", pre + "SR=0ne00000001%2Fregistrations%2Fgateway-001&Sig=QFQTmJZlRai0ZmCW%2FCh904OlC0B63NsxzymZiDCOLoo%3D&SE=1767225600", ""},
		{"stray ampersands", pre + "&" + sr + "&&" + sig + "&" + se + "&", ""},
		{"unknown field ignored", pre + sr + "&" + sig + "&" + se + "&foo=bar", ""},
		{"empty skn", pre + sr + "&" + sig + "&" + se + "&skn=", ""},
	}
	for _, tc := range valid {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := sas.Parse(tc.token)
			if err != nil {
				t.Fatal(err)
			}
			if tok.Resource() != "0ne00000001/registrations/gateway-001" || tok.KeyName() != tc.keyName ||
				tok.Expiry().Unix() != katExpiry || sas.EncodeKey(tok.Signature()) != katDPSSig {
				t.Errorf("parsed %q %q %d %s", tok.Resource(), tok.KeyName(), tok.Expiry().Unix(), sas.EncodeKey(tok.Signature()))
			}
			if err := sas.Verify(tok, "0ne00000001/registrations/gateway-001", [][]byte{mustDecodeKey(t, katDeviceKey)}, time.Unix(katExpiry, 0)); err != nil {
				t.Errorf("a valid form must still verify: %v", err)
			}
		})
	}

	malformed := []struct{ name, token string }{
		{"empty", ""},
		{"no scheme", sr + "&" + sig + "&" + se},
		{"scheme in lower case", "sharedaccesssignature " + sr + "&" + sig + "&" + se},
		{"two spaces", "SharedAccessSignature  " + sr + "&" + sig + "&" + se},
		{"trailing newline", pre + sr + "&" + sig + "&" + se + "\n"},
		{"missing sr", pre + sig + "&" + se},
		{"missing sig", pre + sr + "&" + se},
		{"missing se", pre + sr + "&" + sig},
		{"duplicate sr", pre + sr + "&" + sig + "&" + se + "&" + sr},
		{"duplicate differing in case", pre + sr + "&" + sig + "&" + se + "&SE=1767225600"},
		{"duplicate skn", pre + sr + "&" + sig + "&" + se + "&" + skn + "&" + skn},
		{"se not numeric", pre + sr + "&" + sig + "&se=tomorrow"},
		{"se negative", pre + sr + "&" + sig + "&se=-1"},
		{"se fractional", pre + sr + "&" + sig + "&se=1767225600.5"},
		{"se overflows", pre + sr + "&" + sig + "&se=99999999999999999999"},
		{"se empty", pre + sr + "&" + sig + "&se="},
		{"sig not base64", pre + sr + "&sig=not*base64&" + se},
		{"sig not canonical", pre + sr + "&sig=QFQTmJZlRai0ZmCW%2FCh904OlC0B63NsxzymZiDCOLop%3D&" + se},
		{"sig with line break", pre + sr + "&sig=QFQTmJZlRai0ZmCW%2FCh904O%0AlC0B63NsxzymZiDCOLoo%3D&" + se},
		{"sig too short", pre + sr + "&sig=AAAA&" + se},
		{"sig unencoded padding", pre + sr + "&sig=QFQTmJZlRai0ZmCW%2FCh904OlC0B63NsxzymZiDCOLoo=&" + se},
		{"field without value", pre + sr + "&" + sig + "&" + se + "&skn"},
		{"sr empty", pre + "sr=&" + sig + "&" + se},
		{"sr bad escape", pre + "sr=0ne%zz&" + sig + "&" + se},
	}
	for _, tc := range malformed {
		t.Run(tc.name, func(t *testing.T) {
			_, err := sas.Parse(tc.token)
			if !errors.Is(err, sas.ErrMalformed) {
				t.Fatalf("Parse(%q) error = %v, want ErrMalformed", tc.token, err)
			}
		})
	}
}

func TestVerify(t *testing.T) {
	primary := mustDecodeKey(t, katDeviceKey)
	secondary := bytes.Repeat([]byte{7}, 32)
	other := bytes.Repeat([]byte{9}, 32)
	resource := sas.DPSResource(katScope, katRegistration)
	expiry := time.Unix(katExpiry, 0)
	signed := func(key []byte) sas.Token {
		tok, err := sas.Parse(sas.Sign(resource, key, sas.KeyNameRegistration, expiry))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	for _, tc := range []struct {
		name     string
		tok      sas.Token
		resource string
		keys     [][]byte
		now      time.Time
		want     error // nil: accepted
	}{
		{"valid", signed(primary), resource, [][]byte{primary, secondary}, expiry.Add(-time.Minute), nil},
		{"secondary key", signed(secondary), resource, [][]byte{primary, secondary}, expiry.Add(-time.Minute), nil},
		{"no secondary configured", signed(primary), resource, [][]byte{primary, nil}, expiry.Add(-time.Minute), nil},
		{"within clock skew", signed(primary), resource, [][]byte{primary}, expiry.Add(sas.ClockSkew), nil},
		{"expired beyond skew", signed(primary), resource, [][]byte{primary}, expiry.Add(sas.ClockSkew + time.Second), sas.ErrExpired},
		{"resource differs in case only", signed(primary), strings.ToUpper(resource), [][]byte{primary}, expiry, nil},
		{"resource with trailing slash", signed(primary), resource + "/", [][]byte{primary}, expiry, nil},
		{"other registration", signed(primary), sas.DPSResource(katScope, "gateway-002"), [][]byte{primary}, expiry, sas.ErrWrongResource},
		{"registration prefix only", signed(primary), resource + "0", [][]byte{primary}, expiry, sas.ErrWrongResource},
		{"wrong key", signed(other), resource, [][]byte{primary, secondary}, expiry, sas.ErrBadSignature},
		{"zero token", sas.Token{}, resource, [][]byte{primary}, expiry, sas.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := sas.Verify(tc.tok, tc.resource, tc.keys, tc.now)
			if tc.want == nil && err != nil {
				t.Fatalf("Verify refused a good token: %v", err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Verify error = %v, want %v", err, tc.want)
			}
		})
	}

	t.Run("no keys is a configuration error, not a bad token", func(t *testing.T) {
		err := sas.Verify(signed(primary), resource, [][]byte{nil, {}}, expiry)
		if err == nil || errors.Is(err, sas.ErrBadSignature) {
			t.Fatalf("Verify with no keys = %v, want a distinct error", err)
		}
	})
}

func TestDecodeKey(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		wantErr    string // substring of the error; "" for success
	}{
		{"plain", katDeviceKey, ""},
		{"trailing newline", katDeviceKey + "\n", ""},
		{"surrounding space and CRLF", "  " + katDeviceKey + "\r\n", ""},
		{"empty file", "\n", "empty"},
		{"not base64", "this is not a key\n", "not standard base64"},
		{"url-safe alphabet", "z2ispnuGRVjPfrEzYVn5eDhc05Fpawyu65iZGAhc25Y_", "not standard base64"},
		{"connection string", "HostName=h;DeviceId=d;SharedAccessKey=" + katDeviceKey, "connection string"},
		{"pem", "-----BEGIN PRIVATE KEY-----\nMIG...\n", "PEM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, err := sas.DecodeKey(tc.text)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if sas.EncodeKey(key) != katDeviceKey {
					t.Fatalf("decoded to %x", key)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("DecodeKey error = %v, want one mentioning %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), katDeviceKey) || strings.Contains(err.Error(), "this is not") {
				t.Fatalf("error leaks the secret text: %v", err)
			}
		})
	}
}
