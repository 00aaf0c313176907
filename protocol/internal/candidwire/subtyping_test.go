package candidwire

import (
	"bytes"
	"strings"
	"testing"
)

// equalValues compares two values field by field (their types aside).
func equalValues(a, b Value) bool {
	if a.n != b.n || !bytes.Equal(a.b, b.b) || len(a.elems) != len(b.elems) {
		return false
	}
	for i := range a.elems {
		if !equalValues(a.elems[i], b.elems[i]) {
			return false
		}
	}
	return true
}

func mustEncode(t *testing.T, types []*Type, values ...Value) []byte {
	t.Helper()
	b, err := Encode(types, values)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSubtyping(t *testing.T) {
	nat64, nat, integer, text, null, reserved, boolean := Prim(KindNat64), Prim(KindNat), Prim(KindInt), Prim(KindText), Prim(KindNull), Prim(KindReserved), Prim(KindBool)
	point := Record(F("x", nat64), F("y", nat64))
	pointValue := RecordValue(point, NatValue(1), NatValue(2))
	point3 := Record(F("x", nat64), F("y", nat64), F("z", text))
	pointOptZ := Record(F("x", nat64), F("y", nat64), F("z", Opt(text)), F("n", null), F("r", reserved))
	color := Variant(F("red", null), F("green", null))
	colorRGB := Variant(F("red", null), F("green", null), F("blue", null))

	tests := []struct {
		name     string
		wire     []*Type
		values   []Value
		expected []*Type
		want     []Value // nil with wantErr
		wantErr  string
	}{
		{"same type", []*Type{point}, []Value{pointValue}, []*Type{point}, []Value{pointValue}, ""},
		{"extra wire field skipped", []*Type{point3}, []Value{RecordValue(point3, NatValue(1), NatValue(2), TextValue("extra"))},
			[]*Type{point}, []Value{pointValue}, ""},
		{"missing opt, null and reserved fields", []*Type{point}, []Value{pointValue},
			[]*Type{pointOptZ}, []Value{RecordValue(pointOptZ, NatValue(1), NatValue(2), None(), NullValue(), NullValue())}, ""},
		{"missing required field", []*Type{point}, []Value{pointValue}, []*Type{point3}, nil, "field z is missing"},
		{"opt field from bare value", []*Type{point3}, []Value{RecordValue(point3, NatValue(1), NatValue(2), TextValue("z"))},
			[]*Type{pointOptZ}, []Value{RecordValue(pointOptZ, NatValue(1), NatValue(2), Some(TextValue("z")), NullValue(), NullValue())}, ""},
		{"int from nat", []*Type{nat}, []Value{NatValue(7)}, []*Type{integer}, []Value{IntValue(7)}, ""},
		{"nat64 not from nat", []*Type{nat}, []Value{NatValue(7)}, []*Type{nat64}, nil, "does not fit"},
		{"nat not from nat64", []*Type{nat64}, []Value{NatValue(7)}, []*Type{nat}, nil, "does not fit"},
		{"nat not from int", []*Type{integer}, []Value{IntValue(7)}, []*Type{nat}, nil, "does not fit"},
		{"opt from null", []*Type{null}, []Value{NullValue()}, []*Type{Opt(nat64)}, []Value{None()}, ""},
		{"opt from reserved", []*Type{reserved}, []Value{NullValue()}, []*Type{Opt(nat64)}, []Value{None()}, ""},
		{"opt from bare value", []*Type{nat64}, []Value{NatValue(5)}, []*Type{Opt(nat64)}, []Value{Some(NatValue(5))}, ""},
		{"opt from bare value that does not fit", []*Type{text}, []Value{TextValue("x")}, []*Type{Opt(nat64)}, []Value{None()}, ""},
		{"opt opt from bare value", []*Type{nat64}, []Value{NatValue(5)}, []*Type{Opt(Opt(nat64))}, []Value{None()}, ""},
		{"opt null from bare value", []*Type{nat64}, []Value{NatValue(5)}, []*Type{Opt(null)}, []Value{None()}, ""},
		{"opt from opt that does not fit", []*Type{Opt(text)}, []Value{Some(TextValue("x"))}, []*Type{Opt(nat64)}, []Value{None()}, ""},
		{"opt from opt none", []*Type{Opt(text)}, []Value{None()}, []*Type{Opt(nat64)}, []Value{None()}, ""},
		{"opt record with missing field", []*Type{Opt(point)}, []Value{Some(pointValue)}, []*Type{Opt(point3)}, []Value{None()}, ""},
		{"non-opt not from opt", []*Type{Opt(nat64)}, []Value{Some(NatValue(1))}, []*Type{nat64}, nil, "does not fit"},
		{"variant case known", []*Type{colorRGB}, []Value{VariantValue(colorRGB, "green", NullValue())},
			[]*Type{color}, []Value{VariantValue(color, "green", NullValue())}, ""},
		{"variant case unknown", []*Type{colorRGB}, []Value{VariantValue(colorRGB, "blue", NullValue())}, []*Type{color}, nil, "not expected"},
		{"variant case unknown under opt", []*Type{Opt(colorRGB)}, []Value{Some(VariantValue(colorRGB, "blue", NullValue()))},
			[]*Type{Opt(color)}, []Value{None()}, ""},
		{"variant wire type with fewer cases", []*Type{color}, []Value{VariantValue(color, "red", NullValue())},
			[]*Type{colorRGB}, []Value{VariantValue(colorRGB, "red", NullValue())}, ""},
		{"reserved takes anything", []*Type{point3}, []Value{RecordValue(point3, NatValue(1), NatValue(2), TextValue("z"))},
			[]*Type{reserved}, []Value{NullValue()}, ""},
		{"empty vector of another element type", []*Type{Vec(text)}, []Value{VecValue([]Value{})}, []*Type{Vec(nat64)}, []Value{{}}, ""},
		{"vector of another element type", []*Type{Vec(text)}, []Value{VecValue([]Value{TextValue("a")})}, []*Type{Vec(nat64)}, nil, "does not fit"},
		{"vector of records with extra fields", []*Type{Vec(point3)}, []Value{VecValue([]Value{RecordValue(point3, NatValue(1), NatValue(2), TextValue("z"))})},
			[]*Type{Vec(point)}, []Value{VecValue([]Value{pointValue})}, ""},
		{"extra trailing arguments skipped", []*Type{nat64, text, point}, []Value{NatValue(1), TextValue("x"), pointValue},
			[]*Type{nat64}, []Value{NatValue(1)}, ""},
		{"missing trailing opt argument", []*Type{nat64}, []Value{NatValue(1)}, []*Type{nat64, Opt(text), reserved, null},
			[]Value{NatValue(1), None(), NullValue(), NullValue()}, ""},
		{"missing trailing required argument", []*Type{nat64}, []Value{NatValue(1)}, []*Type{nat64, boolean}, nil, "argument 1 (bool) is missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := mustEncode(t, tt.wire, tt.values...)
			got, err := Decode(data, tt.expected)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i := range tt.want {
				if !equalValues(got[i], tt.want[i]) {
					t.Fatalf("argument %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestEncodeRefusesValuesThatDoNotFit(t *testing.T) {
	rec := Record(F("a", Prim(KindNat8)))
	tests := []struct {
		name  string
		typ   *Type
		value Value
	}{
		{"nat8 of 256", Prim(KindNat8), NatValue(256)},
		{"int8 of 128", Prim(KindInt8), IntValue(128)},
		{"invalid UTF-8", Prim(KindText), BytesValue([]byte{0xc3, 0x28})},
		{"principal of 30 bytes", Prim(KindPrincipal), BytesValue(make([]byte, 30))},
		{"record with a missing field", rec, RecordValue(rec)},
		{"variant with an unknown case", Variant(F("a", Prim(KindNull))), VariantValue(Variant(F("a", Prim(KindNull))), "b", NullValue())},
		{"empty", Prim(KindEmpty), NullValue()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if b, err := Encode([]*Type{tt.typ}, []Value{tt.value}); err == nil {
				t.Fatalf("encoded %x", b)
			}
		})
	}
}
