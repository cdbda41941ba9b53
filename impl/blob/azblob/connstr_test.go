package azblob

import "testing"

func TestConnectionStringField(t *testing.T) {
	conn := "DefaultEndpointsProtocol=http; accountname=devstoreaccount1;AccountKey=a2V5PQ==;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
	for _, c := range []struct{ key, want string }{
		{"AccountName", "devstoreaccount1"},
		{"AccountKey", "a2V5PQ=="}, // a base64 key keeps its '=' padding
		{"BlobEndpoint", "http://127.0.0.1:10000/devstoreaccount1"},
		{"QueueEndpoint", ""},
	} {
		if got := ConnectionStringField(conn, c.key); got != c.want {
			t.Errorf("ConnectionStringField(%q) = %q, want %q", c.key, got, c.want)
		}
	}
	if got := ConnectionStringField("", "AccountName"); got != "" {
		t.Errorf("empty string: %q, want empty", got)
	}
}
