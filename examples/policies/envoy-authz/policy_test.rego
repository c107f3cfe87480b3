package envoy.authz

# header.payload.signature with payload {"role":"editor"}
editor_token := "Bearer eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiZWRpdG9yIn0.c2ln"

test_get_allowed if allow with input as {"attributes": {"request": {"http": {"method": "GET"}}}}

test_post_by_editor_allowed if {
	allow with input as {"attributes": {"request": {"http": {"method": "POST", "headers": {"authorization": editor_token}}}}}
}

test_post_without_token_denied if {
	not allow with input as {"attributes": {"request": {"http": {"method": "POST", "headers": {}}}}}
}

test_delete_denied if {
	not allow with input as {"attributes": {"request": {"http": {"method": "DELETE", "headers": {"authorization": editor_token}}}}}
}
