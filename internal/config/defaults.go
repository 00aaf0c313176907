package config

import (
	"encoding"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"
)

// Defaults sets every field of spec (a pointer to a struct) that has a `default` tag to the value
// envconfig would give it from an empty environment, and leaves the other fields alone. It walks
// the struct as envconfig v1.4.0 does (embedded and named struct fields, pointers to structs are
// allocated, unexported and `ignored:"true"` fields skipped) and parses each value by envconfig's
// rules, so the tags are the one place a default is written: a role's DefaultConfig and the
// configuration a command reads from the environment cannot disagree.
func Defaults(spec any) error {
	v := reflect.ValueOf(spec)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("config defaults: %T is not a pointer to a struct", spec)
	}
	return setDefaults(v.Elem())
}

// MustDefaults returns a T with the defaults of its tags (see Defaults). The tags are constants of
// the program, so a tag that does not parse is a programming error: it panics, and every
// DefaultConfig built on it is called by tests.
func MustDefaults[T any]() T {
	var c T
	if err := Defaults(&c); err != nil {
		panic(err)
	}
	return c
}

func setDefaults(s reflect.Value) error {
	t := s.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		f := s.Field(i)
		if !f.CanSet() || isTrue(sf.Tag.Get("ignored")) {
			continue
		}
		for f.Kind() == reflect.Pointer && f.Type().Elem().Kind() == reflect.Struct {
			if f.IsNil() {
				f.Set(reflect.New(f.Type().Elem()))
			}
			f = f.Elem()
		}
		if f.Kind() == reflect.Struct && !decodes(f.Type()) {
			if err := setDefaults(f); err != nil {
				return err
			}
			continue
		}
		def := sf.Tag.Get("default")
		if def == "" { // envconfig too treats an empty default as none
			continue
		}
		if err := parseInto(f, def); err != nil {
			return fmt.Errorf("config defaults: field %s.%s: default %q: %w", t.Name(), sf.Name, def, err)
		}
	}
	return nil
}

// parseInto sets f from s the way envconfig's field processing does: a Decoder, Setter,
// TextUnmarshaler or BinaryUnmarshaler first; then by kind, integers in any base strconv accepts
// with base 0, time.Duration by time.ParseDuration, slices split at commas ([]byte taken whole).
func parseInto(f reflect.Value, s string) error {
	if f.CanAddr() {
		switch p := f.Addr().Interface().(type) {
		case envconfig.Decoder:
			return p.Decode(s)
		case envconfig.Setter:
			return p.Set(s)
		case encoding.TextUnmarshaler:
			return p.UnmarshalText([]byte(s))
		case encoding.BinaryUnmarshaler:
			return p.UnmarshalBinary([]byte(s))
		}
	}
	if f.Kind() == reflect.Pointer {
		if f.IsNil() {
			f.Set(reflect.New(f.Type().Elem()))
		}
		return parseInto(f.Elem(), s)
	}
	switch f.Kind() {
	case reflect.String:
		f.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		f.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if f.Type() == reflect.TypeFor[time.Duration]() {
			d, err := time.ParseDuration(s)
			if err != nil {
				return err
			}
			f.SetInt(int64(d))
			return nil
		}
		n, err := strconv.ParseInt(s, 0, f.Type().Bits())
		if err != nil {
			return err
		}
		f.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(s, 0, f.Type().Bits())
		if err != nil {
			return err
		}
		f.SetUint(n)
	case reflect.Float32, reflect.Float64:
		x, err := strconv.ParseFloat(s, f.Type().Bits())
		if err != nil {
			return err
		}
		f.SetFloat(x)
	case reflect.Slice:
		if f.Type().Elem().Kind() == reflect.Uint8 {
			f.SetBytes([]byte(s))
			return nil
		}
		if strings.TrimSpace(s) == "" {
			f.Set(reflect.MakeSlice(f.Type(), 0, 0))
			return nil
		}
		parts := strings.Split(s, ",")
		sl := reflect.MakeSlice(f.Type(), len(parts), len(parts))
		for i, p := range parts {
			if err := parseInto(sl.Index(i), p); err != nil {
				return err
			}
		}
		f.Set(sl)
	default:
		return fmt.Errorf("fields of type %s take no default here", f.Type())
	}
	return nil
}
