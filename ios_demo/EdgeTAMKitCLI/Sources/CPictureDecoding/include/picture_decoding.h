// Pictures for the Linux command line: JPEG (libjpeg) and PNG (libpng) decoded as the Python CLI decodes them with
// Pillow: 8-bit RGB (16-bit grey scaled to 8 bits, 16-bit colour by its high byte, alpha dropped, grey and palette
// expanded), or for a mask picture which pixels are nonzero, with the JPEG's EXIF orientation reported so the
// caller shows the picture as displayed.
#ifndef EDGETAM_PICTURE_DECODING_H
#define EDGETAM_PICTURE_DECODING_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int width;
    int height;
    /// width * height * 3 bytes, row after row; release with pd_free.
    uint8_t *rgb;
    /// EXIF orientation 1-8 (1 when the file has none).
    int orientation;
} pd_picture;

/// Pictures above this many pixels are refused, as Pillow refuses them (twice its MAX_IMAGE_PIXELS).
#define PD_MAX_PIXELS 178956970L

enum { PD_OK = 0, PD_FAILED = 1, PD_TOO_LARGE = 2 };

/// Decode a JPEG or PNG file (told apart by its first bytes); PD_OK, or a failure that `error` explains.
/// With `nonzero`, each pixel's three bytes are 255 where Pillow's `nonzero_pixels` sees the object (a 16-bit
/// sample above 0, or an 8-bit picture's luma `convert("L")` above 0) and 0 elsewhere.
int pd_decode(const char *path, int nonzero, pd_picture *picture, char *error, size_t error_size);
void pd_free(pd_picture *picture);

#ifdef __cplusplus
}
#endif

#endif
