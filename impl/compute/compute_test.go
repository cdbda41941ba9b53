package compute

import (
	"errors"
	"testing"
)

func TestErrorIs(t *testing.T) {
	for _, tc := range []struct {
		err  *Error
		want []error
		not  []error
	}{
		{&Error{Status: 404, Code: CodeNotFound}, []error{ErrNotFound}, []error{ErrThrottled, ErrConflict}},
		{&Error{Status: 429, Code: CodeThrottled}, []error{ErrThrottled}, []error{ErrFailed, ErrNotFound}},
		{&Error{Status: 400, Code: CodeIPInUse}, []error{ErrIPInUse, ErrInvalid}, []error{ErrConflict}},
		{&Error{Status: 409, Code: CodeExists}, []error{ErrExists, ErrConflict}, []error{ErrNotFound}},
		{&Error{Status: 409, Code: CodeQuota}, []error{ErrFailed, ErrConflict}, []error{ErrInvalid}},
		{&Error{Status: 200, Code: CodeBootFailed}, []error{ErrFailed}, []error{ErrConflict}},
		{&Error{Status: 400, Code: CodeNICInUse}, []error{ErrConflict, ErrInvalid}, []error{ErrNotFound, ErrFailed}},
		{&Error{Status: 400, Code: CodeSubnetInUse}, []error{ErrConflict, ErrInvalid}, []error{ErrIPInUse}},
		{&Error{Status: 400, Code: "PrivateIPAddressNotInSubnet"}, []error{ErrInvalid}, []error{ErrConflict}},
	} {
		for _, w := range tc.want {
			if !errors.Is(tc.err, w) {
				t.Errorf("%v: errors.Is(%v) = false, want true", tc.err, w)
			}
		}
		for _, w := range tc.not {
			if errors.Is(tc.err, w) {
				t.Errorf("%v: errors.Is(%v) = true, want false", tc.err, w)
			}
		}
	}
}

func TestRefOrder(t *testing.T) {
	a := Ref{KindDisk, "rg", "b"}
	b := Ref{KindNIC, "rg", "a"}
	c := Ref{KindNIC, "rg", "b"}
	if a.Compare(b) >= 0 || b.Compare(c) >= 0 || c.Compare(c) != 0 || c.Compare(a) <= 0 {
		t.Fatalf("order wrong: %v %v %v", a, b, c)
	}
	if got := c.String(); got != "nic/rg/b" {
		t.Fatalf("String() = %q", got)
	}
}
