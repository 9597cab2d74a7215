"""Static demo data: names, fiscal regimes, places and products, all valid in SAT's catalogs.

Regimes are chosen per persona type because CFDI40141/40158 reject a régimen that does not apply
to the RFC's persona (12 characters moral, 13 física).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum


class Persona(StrEnum):
    MORAL = "moral"
    FISICA = "fisica"


# Issuing regimes: 601 general de ley, 603 no lucrativas, 626 RESICO (both personas);
# 612 actividades empresariales y profesionales, 606 arrendamiento, 621 incorporación fiscal.
ISSUER_REGIMES: dict[Persona, tuple[str, ...]] = {
    Persona.MORAL: ("601", "601", "601", "603", "626"),
    Persona.FISICA: ("612", "612", "606", "626", "621"),
}
# 605 sueldos y salarios and 616 sin obligaciones fiscales only receive invoices.
RECEIVER_REGIMES: dict[Persona, tuple[str, ...]] = {
    Persona.MORAL: ("601", "601", "603", "626"),
    Persona.FISICA: ("612", "605", "606", "626", "616"),
}
# c_UsoCFDI allowed per receiving regime (subset of SAT's table).
USOS_BY_REGIME: dict[str, tuple[str, ...]] = {
    "601": ("G01", "G03", "I04", "I08"),
    "603": ("G01", "G03"),
    "626": ("G01", "G03", "I04"),
    "612": ("G01", "G03", "I04", "D10"),
    "606": ("G03", "I06"),
    "605": ("D01", "D02", "D10", "S01"),
    "616": ("S01",),
}

COMPANY_WORDS_A = ("COMERCIALIZADORA", "DISTRIBUIDORA", "SERVICIOS", "GRUPO", "CONSTRUCTORA", "TRANSPORTES",
                   "ALIMENTOS", "TECNOLOGIA", "INDUSTRIAS", "CONSULTORES", "FARMACIAS", "IMPORTADORA")
COMPANY_WORDS_B = ("DEL NORTE", "DEL BAJIO", "PENINSULAR", "DEL PACIFICO", "INTEGRALES", "AZTECA", "MAYA",
                   "DEL GOLFO", "OCCIDENTAL", "UNIDOS", "REGIOMONTANA", "ANDINA", "SIERRA MADRE", "TOLTECA")
GIVEN_NAMES = ("MARIA", "JOSE", "JUAN", "GUADALUPE", "FERNANDO", "ALEJANDRA", "LUIS", "ROSA", "CARLOS",
               "VERONICA", "RICARDO", "PATRICIA", "JAVIER", "ADRIANA", "MIGUEL", "SOFIA", "EDUARDO", "LAURA")
SURNAMES = ("HERNANDEZ", "GARCIA", "MARTINEZ", "LOPEZ", "GONZALEZ", "PEREZ", "RODRIGUEZ", "SANCHEZ",
            "RAMIREZ", "CRUZ", "FLORES", "GOMEZ", "MORALES", "VAZQUEZ", "JIMENEZ", "REYES", "DIAZ", "TORRES")

# Postal codes present in c_CodigoPostal; the border ones may apply the 8 % IVA (estímulo fronterizo).
POSTAL_CODES = ("06600", "03100", "11529", "64000", "44100", "45050", "83000", "97000", "72000", "76000",
                "31000", "68000", "29000", "86000", "20000", "58000", "80000", "25000")
BORDER_POSTAL_CODES = ("22000", "32000", "88500", "30700")

FORMAS_PAGO = ("01", "02", "03", "03", "03", "04", "28")  # efectivo, cheque, transferencia, tarjetas


class TaxProfile(StrEnum):
    """How a product is taxed; the retentions depend on who issues to whom (see draft.py)."""

    IVA = "iva"                 # IVA 16 % (8 % at the border)
    IVA_ZERO = "iva_zero"       # basic food, medicines: IVA 0 %
    EXENTO = "exento"           # medical services, education: IVA exento
    IEPS_BEER = "ieps_beer"     # IEPS 26.5 % + IVA
    IEPS_SNACK = "ieps_snack"   # IEPS 8 % (high-calorie food) + IVA
    PROFESSIONAL = "professional"  # fee-based services: ISR/IVA retentions to personas morales
    RENT = "rent"               # leasing: ISR/IVA retentions to personas morales
    FREIGHT = "freight"         # road freight: IVA 4 % retention to personas morales


@dataclass(frozen=True, slots=True)
class Product:
    clave: str          # c_ClaveProdServ
    unidad_clave: str   # c_ClaveUnidad
    unidad: str
    descripcion: str
    low: Decimal        # unit price range, MXN
    high: Decimal
    profile: TaxProfile
    whole_units: bool = True


def _p(clave: str, unidad_clave: str, unidad: str, descripcion: str, low: str, high: str,
       profile: TaxProfile, whole_units: bool = True) -> Product:
    return Product(clave, unidad_clave, unidad, descripcion, Decimal(low), Decimal(high), profile, whole_units)


PRODUCTS: tuple[Product, ...] = (
    _p("81111500", "E48", "Servicio", "Desarrollo de software a la medida", "2500", "85000", TaxProfile.PROFESSIONAL),
    _p("81112106", "E48", "Servicio", "Servicio de hospedaje en la nube", "350", "12000", TaxProfile.IVA),
    _p("80111600", "E48", "Servicio", "Servicios de personal temporal", "1800", "45000", TaxProfile.IVA),
    _p("43211503", "H87", "Pieza", "Computadora portatil 14 pulgadas", "9500", "38000", TaxProfile.IVA),
    _p("44121600", "H87", "Pieza", "Suministros de escritorio surtidos", "12.5", "950", TaxProfile.IVA),
    _p("50202203", "H87", "Pieza", "Cerveza clara 355 ml", "14.9", "32", TaxProfile.IEPS_BEER),
    _p("50181900", "KGM", "Kilogramo", "Pan de caja y bolleria", "28", "95", TaxProfile.IVA_ZERO, False),
    _p("50192100", "H87", "Pieza", "Botana de papa 170 g", "18", "65", TaxProfile.IEPS_SNACK),
    _p("78101802", "E48", "Servicio", "Flete terrestre de carga consolidada", "1200", "48000", TaxProfile.FREIGHT),
    _p("80131500", "MON", "Mes", "Arrendamiento de local comercial", "6500", "95000", TaxProfile.RENT),
    _p("85121800", "E48", "Servicio", "Estudios de laboratorio clinico", "250", "6500", TaxProfile.EXENTO),
    _p("86101700", "HUR", "Hora", "Capacitacion tecnica en sitio", "450", "3800", TaxProfile.IVA, False),
    _p("25172504", "H87", "Pieza", "Llanta radial 205/55 R16", "1350", "4200", TaxProfile.IVA),
    _p("90101501", "E48", "Servicio", "Servicio de alimentos para evento", "180", "950", TaxProfile.IVA),
    _p("43232408", "E48", "Servicio", "Licencia anual de software de gestion", "1500", "60000", TaxProfile.IVA),
    _p("15101514", "LTR", "Litro", "Gasolina magna", "21.5", "25.9", TaxProfile.IVA, False),
    _p("53101602", "H87", "Pieza", "Camisa de vestir", "290", "1900", TaxProfile.IVA),
    _p("72101507", "E48", "Servicio", "Mantenimiento de edificio", "1500", "75000", TaxProfile.PROFESSIONAL),
    _p("10191509", "H87", "Pieza", "Fertilizante organico 25 kg", "180", "760", TaxProfile.IVA_ZERO),
    _p("52161500", "H87", "Pieza", "Pantalla LED 50 pulgadas", "6500", "21000", TaxProfile.IVA),
)

# Pagos 2.0: the payment receipt's single concept is fixed by SAT.
PAGO_PRODUCT = ("84111506", "ACT", "Pago")
