"""Every model the plugin defines, by class name: the registry recbole_milk.utils.get_model looks names up in."""
from typing import Dict, Type

from recbole_milk.model.general_recommender.ccfcrec import CCFCRec
from recbole_milk.model.general_recommender.clcrec import CLCRec
from recbole_milk.model.general_recommender.dropoutnet import DropoutNet
from recbole_milk.model.general_recommender.duif import DUIF
from recbole_milk.model.general_recommender.gar import GAR
from recbole_milk.model.general_recommender.gorec import GoRec
from recbole_milk.model.general_recommender.heater import Heater
from recbole_milk.model.general_recommender.milk import MILK
from recbole_milk.model.general_recommender.mtpr import MTPR
from recbole_milk.model.general_recommender.vbpr import VBPR

PLUGIN_MODELS: Dict[str, Type] = {
    model.__name__: model
    for model in (MILK, DUIF, VBPR, MTPR, CLCRec, CCFCRec, DropoutNet, Heater, GAR, GoRec)
}
