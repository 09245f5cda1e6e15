/* Error codes: text and names from the one list in buffstreams.h. */
#include "buffstreams.h"

const char *bs_strerror(int err)
{
	switch (err) {
	case BS_OK:
		return "success";
#define BS_ERR_TEXT_(name, code, text) case BS_##name: return text;
	BS_ERRNO_MAP(BS_ERR_TEXT_)
#undef BS_ERR_TEXT_
	}
	return "unknown error";
}

const char *bs_err_name(int err)
{
	switch (err) {
	case BS_OK:
		return "OK";
#define BS_ERR_NAME_(name, code, text) case BS_##name: return #name;
	BS_ERRNO_MAP(BS_ERR_NAME_)
#undef BS_ERR_NAME_
	}
	return "UNKNOWN";
}
