package shard

import (
	"bytes"
	"reflect"
	"testing"
)

func TestWriteCSVRoundTrip(t *testing.T) {
	ds, err := Read(bytes.NewReader([]byte("\ufeff,statement,status\r\n7,\"multi\r\nline, \"\"quoted\"\"\",Stress\r\n9,plain,Personality-disorder\r\n")), "in.csv", Options{})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteCSV(&buf, ds, []int{1, 0}); err != nil {
		t.Fatal(err)
	}
	back, err := Read(&buf, "out.csv", Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []Row{{Line: 2, Index: "9", Statement: "plain", Label: PersonalityDisorder}, {Line: 3, Index: "7", Statement: "multi\nline, \"quoted\"", Label: Stress}}
	if !reflect.DeepEqual(back.Rows, want) {
		t.Fatalf("round trip gave %+v, want %+v", back.Rows, want)
	}
}
